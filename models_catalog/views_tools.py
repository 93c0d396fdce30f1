"""Duplicates, Hugging Face jobs and API tokens: the viewer's own things only."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from models_catalog.forms import ApiTokenForm, DuplicatesForm, HFIndexForm, HFVerifyForm
from models_catalog.jinja_env import partial_html
from models_catalog.models import ApiToken
from models_catalog.selectors import visible_jobs
from models_catalog.services.duplicates import shown_duplicate_groups
from models_catalog.services.hf_verify_job import hf_verify_job_create
from models_catalog.services.huggingface import hf_index_job_create
from models_catalog.services.paths import PathRefused, refusal_reason
from models_catalog.services.tokens import TokenRefused, api_token_create, api_token_revoke

JOBS_SHOWN = 50


# --- duplicates ----------------------------------------------------------------


def _prefer(request: HttpRequest) -> tuple[DuplicatesForm, str]:
    form = DuplicatesForm(request.GET)
    prefer = (form.cleaned_data.get("prefer") if form.is_valid() else "") or "lossless"
    return form, prefer


GROUPS_PER_PAGE = 50


@login_required
def duplicates(request: HttpRequest) -> HttpResponse:
    form, prefer = _prefer(request)
    groups = shown_duplicate_groups(owner=request.user, prefer_precision=prefer)
    # The biggest lossless savings come first; a library with thousands of groups gets pages, not one huge page.
    page = Paginator(groups, GROUPS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "models_catalog/duplicates.html", {
        "form": form, "prefer": prefer, "groups": groups, "page": page,
        "lossless": sum(g.lossless_bytes for g in groups), "lossy": sum(g.lossy_bytes for g in groups),
        # The groups in Jinja2 (models_catalog/jinja_env.py): Django's templates resolve each value at run time.
        "groups_html": partial_html("models_catalog/_duplicate_groups.html", {"page": page, "prefer": prefer}),
    })


CSV_COLUMNS = ("group", "model", "keep", "relation", "copy_set", "reclaim", "name", "path", "format", "precision",
               "size_bytes", "group_reclaimable_bytes", "group_lossless_bytes", "why_keep", "evidence")


EXPORT_ROWS_PER_CHUNK = 500


@login_required
def duplicates_export(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    """Streamed: the body goes out a chunk at a time, never built whole (thousands of groups at 1M files)."""
    _, prefer = _prefer(request)
    groups = shown_duplicate_groups(owner=request.user, prefer_precision=prefer)
    if fmt == "json":
        response = StreamingHttpResponse(_json_chunks(groups, prefer), content_type="application/json")
    else:
        response = StreamingHttpResponse(_csv_chunks(groups), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="modelxref-duplicates.{fmt}"'
    return response


def _csv_chunks(groups):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for n, g in enumerate(groups, 1):
        for m in g.members:
            writer.writerow([n, g.model or "", "yes" if m.id == g.keep_id else "no", m.match, m.copy_set, m.reclaim,
                             _csv_safe(m.name), _csv_safe(m.path), m.format, m.precision, m.size,
                             g.reclaimable_bytes, g.lossless_bytes, g.reason, _csv_safe(m.evidence)])
            rows += 1
            if rows % EXPORT_ROWS_PER_CHUNK == 0:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
    yield out.getvalue()


def _json_chunks(groups, prefer: str):
    # The document JsonResponse wrote, one group at a time: the totals first, then the groups' array.
    head = {"prefer_precision": prefer, "reclaimable_bytes": sum(g.reclaimable_bytes for g in groups),
            "lossless_bytes": sum(g.lossless_bytes for g in groups), "lossy_bytes": sum(g.lossy_bytes for g in groups)}
    yield json.dumps(head, cls=DjangoJSONEncoder, indent=2)[:-2] + ',\n  "groups": ['
    for n, g in enumerate(groups):
        yield ("," if n else "") + "\n" + json.dumps(g.to_json(), cls=DjangoJSONEncoder, indent=2)
    yield "\n  ]\n}\n"


def _csv_safe(value: str) -> str:
    # A file name like "=HYPERLINK(...)" must stay text when the CSV is opened in a spreadsheet.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# --- Hugging Face ----------------------------------------------------------------


def _hf_context(request: HttpRequest, **forms) -> dict:
    jobs = list(visible_jobs(request.user)[:JOBS_SHOWN])
    return {
        "index_form": forms.get("index_form") or HFIndexForm(prefix="index"),
        "verify_form": forms.get("verify_form") or HFVerifyForm(prefix="verify"),
        "jobs": jobs, "pending": any(not j.is_finished for j in jobs),
    }


@login_required
def hf_page(request: HttpRequest) -> HttpResponse:
    context = _hf_context(request)
    if request.headers.get("HX-Request"):
        return render(request, "models_catalog/_jobs.html", context)
    return render(request, "models_catalog/hf.html", context)


@login_required
@require_http_methods(["POST"])
def hf_index(request: HttpRequest) -> HttpResponse:
    form = HFIndexForm(request.POST, prefix="index")
    if not form.is_valid():
        return render(request, "models_catalog/hf.html", _hf_context(request, index_form=form), status=400)
    job = hf_index_job_create(owner=request.user, repo_id=form.cleaned_data["repo_id"],
                              revision=form.cleaned_data["revision"] or None, repo_type=form.cleaned_data["repo_type"])
    messages.success(request, f"Indexing {job.params['repo_id']} in the background.")
    return redirect("catalog:hf")


@login_required
@require_http_methods(["POST"])
def hf_verify(request: HttpRequest) -> HttpResponse:
    form = HFVerifyForm(request.POST, prefix="verify")
    if form.is_valid():
        try:
            job = hf_verify_job_create(owner=request.user, repo_id=form.cleaned_data["repo_id"],
                                       local_dir=form.cleaned_data["local_dir"],
                                       revision=form.cleaned_data["revision"] or None,
                                       repo_type=form.cleaned_data["repo_type"])
        except PathRefused as exc:
            # The same words as the register page and the API: never where an outside path leads.
            form.add_error("local_dir", refusal_reason(form.cleaned_data["local_dir"], str(exc), user=request.user))
        else:
            messages.success(request, f"Verifying {job.params['local_dir']} against {job.params['repo_id']}.")
            return redirect("catalog:job_detail", pk=job.pk)
    return render(request, "models_catalog/hf.html", _hf_context(request, verify_form=form), status=400)


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(visible_jobs(request.user), pk=pk)
    result = job.result if isinstance(job.result, dict) else {}
    report = None
    if job.kind == job.Kind.HF_VERIFY and result:
        report = {key: result.get(key) or [] for key in ("matched", "mismatched", "missing", "extra", "refused")}
    context = {"job": job, "report": report, "result_json": json.dumps(job.result, indent=2) if job.result else ""}
    if job.kind == job.Kind.CONVERT:
        context.update(converted=result if job.status == job.Status.DONE else None,
                       refused_findings=[x for x in result.get("findings") or [] if isinstance(x, dict)][:50],
                       source_name=Path(str(job.params.get("source", ""))).name)
    template = "models_catalog/_job_status.html" if request.headers.get("HX-Request") else "models_catalog/job_detail.html"
    return render(request, template, context)


# --- API tokens ----------------------------------------------------------------


@never_cache  # the answer to "create" holds a key in clear: no copy of it may stay in a cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    new_key = ""
    form = ApiTokenForm()
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "revoke":
            revoked = api_token_revoke(user=request.user, token_id=_int(request.POST.get("token")))
            if revoked:
                messages.success(request, "The token was revoked: it no longer works.")
            return redirect("catalog:tokens")
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                _, new_key = api_token_create(user=request.user, name=form.cleaned_data["name"])
            except TokenRefused as exc:
                form.add_error(None, str(exc))
            else:
                form = ApiTokenForm()
        # No redirect after creating: the key is shown in this answer only, and never stored.
    return render(request, "models_catalog/tokens.html", {
        "tokens": ApiToken.objects.filter(user=request.user), "form": form, "new_key": new_key,
        "api_base": request.build_absolute_uri("/api/v1/files/"),
    }, status=400 if form.errors else 200)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
