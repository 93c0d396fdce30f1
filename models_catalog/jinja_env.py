"""The Jinja2 environment of the few partials rendered once per row of a long list (My files' rows, a page
of duplicate groups), and of this app's form widgets (FormRenderer).

Django's template language resolves every `{{ a.b.c }}` at run time, one lookup at a time: 50 rows of My
files cost ~22 ms of CPU on the load-test machine, a quarter of the page (docs/BENCHMARKS.md, "Scale").
Jinja2 compiles a template to Python once. The filters are Django's own functions, so a size, a date or
an URL reads the same on both kinds of page; autoescaping is on (Django's Jinja2 backend default), with
Django's own escape function.
"""
from __future__ import annotations

from pathlib import Path

from django.forms import renderers
from django.template import defaultfilters
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe
from jinja2 import Environment


def url(name: str, *args) -> str:
    return reverse(name, args=args)


_SENTINEL = 987654321987654321


def id_url(name: str):
    """The URL of `name` (a route with one integer argument) for any id, from one reverse(): a page of rows
    calls it once per route instead of reverse() per row, which was half of the rows' Jinja time."""
    prefix, suffix = reverse(name, args=[_SENTINEL]).split(str(_SENTINEL))
    return lambda pk: f"{prefix}{int(pk)}{suffix}"


def partial_html(template_name: str, context: dict, *, request=None) -> str:
    """A Jinja2 partial as HTML a Django page embeds as it is: Jinja escaped every value it drew, and its
    backend returns a plain str."""
    return mark_safe(render_to_string(template_name, context, request=request, using="jinja2"))


def django_include(template_name: str, **context) -> str:
    """A partial shared with Django-template pages (a status or update badge), rendered by Django: one
    source for its markup. For what only some rows show; a partial every row shows belongs in Jinja."""
    return mark_safe(render_to_string(template_name, context))


def environment(**options) -> Environment:
    # Every value drawn goes through Django's escaping first (its entities: &#x27;, &quot;), so a page reads
    # the same whichever engine drew it; markupsafe then leaves that safe string alone.
    env = Environment(**options, finalize=conditional_escape)
    env.globals.update(url=url, id_url=id_url, django_include=django_include)
    env.filters.update(filesizeformat=defaultfilters.filesizeformat, urlencode=defaultfilters.urlencode)
    return env


class FormRenderer(renderers.Jinja2):
    """Django's Jinja2 widget templates (django/forms/jinja2: the same markup as its Django-template ones),
    drawn by this environment, so a form escapes the way the rest of the page does."""

    @cached_property
    def engine(self):
        return self.backend({"APP_DIRS": True, "DIRS": [Path(renderers.__file__).parent / self.backend.app_dirname],
                             "NAME": "djangoforms", "OPTIONS": {"environment": "models_catalog.jinja_env.environment"}})
