"""The shared catalog, one model's page, and the hash lookup. Local files shown are only the viewer's."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from models_catalog.forms import CatalogFilterForm, LookupForm
from models_catalog.identity import IDENTIFYING_KINDS
from models_catalog.models import Match, SourceModel
from models_catalog.selectors import (
    SORTS, CatalogQuery, catalog_page, model_detail, models_of_local_files, my_catalog_choices, source_choices,
)
from models_catalog.services.lookup import hash_lookup
from models_catalog.updates import model_update
from workers.hash_parse import HashQueryError
from workers.hash_query import parse_hash_query

FILTER_NAMES = ("type", "base_model", "source", "format", "safety", "kind")


def _hash_search(text: str, user) -> tuple[set[int] | None, list]:
    """Model ids a hash search finds (None when the text is not hashes), and what was tried."""
    try:
        parse_hash_query(text)
    except HashQueryError:
        return None, []
    results = hash_lookup(text=text, user=user, ask_civitai=False)
    ids = {m.model_id for r in results for m in r.matches if m.model_id}
    ids |= models_of_local_files({m.local_file_id for r in results for m in r.matches if m.local_file_id}, user)
    return ids, results


@login_required
def catalog(request: HttpRequest) -> HttpResponse:
    form = CatalogFilterForm(request.GET)  # every field optional: an empty query is valid
    params = form.cleaned_or_defaults()
    model_ids, hash_results = _hash_search(params["q"], request.user) if params["q"] else (None, [])
    query = CatalogQuery(user=request.user, scope=params["scope"], text=params["q"], model_ids=model_ids,
                         sort=params["sort"], after=params["after"], **{n: params[n] for n in FILTER_NAMES})
    page = catalog_page(query)
    keep = {k: v for k, v in params.items() if v and k != "after"}
    filtered = any(params[n] for n in FILTER_NAMES) or bool(params["q"])
    context = {
        "form": form, "params": params, "page": page,
        "choices": my_catalog_choices(request.user), "sources": source_choices(), "sorts": SORTS,
        "match_kinds": Match.Kind.choices, "hash_results": hash_results, "filtered": filtered,
        "next_url": f"?{urlencode(keep | {'after': page.next_cursor})}" if page.next_cursor else None,
        "first_url": f"?{urlencode(keep)}",
        "all_url": f"?{urlencode(keep | {'scope': 'all'})}",
        "mine_url": f"?{urlencode(keep | {'scope': 'mine'})}",
    }
    return render(request, "models_catalog/catalog.html", context)


@login_required
def model_page(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(SourceModel, pk=pk)
    versions = model_detail(model, request.user)
    words = []
    for v in versions:
        for w in v.version.trained_words or []:
            if isinstance(w, str) and w not in words:
                words.append(w)
    copies = len({c.file.pk for v in versions for f in v.files for c in f.copies})
    held = [v.version for v in versions
            if any(c.file.owner_id == request.user.pk and c.match.kind in IDENTIFYING_KINDS for f in v.files for c in f.copies)]
    _with_version_extras(versions, model=model, user=request.user)
    return render(request, "models_catalog/model_detail.html",
                  {"model": model, "versions": versions, "trigger_words": words, "copies": copies,
                   "update": model_update(model, held)})


def _with_version_extras(versions, *, model, user) -> None:
    """Each version's previews, and what to paste to use it (NAME: my copy's name, else the published one)."""
    from models_catalog.preview_selectors import previews_for_versions
    from models_catalog.prompt_usage import prompt_usage
    from models_catalog.services.preferences import nsfw_max_level_for

    previews = previews_for_versions([v.version.pk for v in versions], nsfw_max_level=nsfw_max_level_for(user))
    for v in versions:
        v.previews = previews.get(v.version.pk, [])
        mine = next((c.file.name for f in v.files for c in f.copies if c.file.owner_id == user.pk), "")
        primary = next((f.file.name for f in v.files if f.file.primary), v.files[0].file.name if v.files else "")
        v.usage = prompt_usage(file_name=mine or primary, trained_words=v.version.trained_words, model_type=model.type)


@login_required
def lookup(request: HttpRequest) -> HttpResponse:
    form = LookupForm(request.GET if "q" in request.GET else None)
    results, error = None, None
    if form.is_bound:
        if form.is_valid():
            try:
                results = hash_lookup(text=form.cleaned_data["q"], user=request.user)
            except HashQueryError as exc:
                error = str(exc)
        else:
            error = "; ".join(e for errors in form.errors.values() for e in errors)
    return render(request, "models_catalog/lookup.html", {"form": form, "results": results, "error": error},
                  status=400 if error else 200)
