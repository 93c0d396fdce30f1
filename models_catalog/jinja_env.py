"""The Jinja2 environment of the few partials rendered once per row of a long list (My files' rows).

Django's template language resolves every `{{ a.b.c }}` at run time, one lookup at a time: 50 rows of My
files cost ~22 ms of CPU on the load-test machine, a quarter of the page (docs/BENCHMARKS.md, "Scale").
Jinja2 compiles a template to Python once. The filters are Django's own functions, so a size, a date or
an URL reads the same on both kinds of page; autoescaping is on (Django's Jinja2 backend default).
"""
from __future__ import annotations

from django.template import defaultfilters
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe
from jinja2 import Environment


_SENTINEL = 987654321987654321


def id_url(name: str):
    """The URL of `name` (a route with one integer argument) for any id, from one reverse(): a page of rows
    calls it once per route instead of reverse() per row, which was half of the rows' Jinja time."""
    prefix, suffix = reverse(name, args=[_SENTINEL]).split(str(_SENTINEL))
    return lambda pk: f"{prefix}{int(pk)}{suffix}"


def django_include(template_name: str, **context) -> str:
    """A partial shared with Django-template pages (a status or update badge), rendered by Django: one
    source for its markup. For what only some rows show; a partial every row shows belongs in Jinja."""
    return mark_safe(render_to_string(template_name, context))


def environment(**options) -> Environment:
    env = Environment(**options)
    env.globals.update(id_url=id_url, django_include=django_include)
    env.filters.update(filesizeformat=defaultfilters.filesizeformat, urlencode=defaultfilters.urlencode)
    return env
