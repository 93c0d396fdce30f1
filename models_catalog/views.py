"""Web pages. Views stay thin: they read rows and call services."""
from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from models_catalog.api_errors import service_down_warning
from models_catalog.forms import FileFilterForm
from models_catalog.jinja_env import partial_html
from models_catalog.identity import file_identities
from models_catalog.models import FileHashes, LocalFile
from models_catalog.preview_selectors import previews_for_versions
from models_catalog.prompt_usage import prompt_usage
from models_catalog.selectors import (
    FILE_SORTS, FileQuery, civitai_lookups_for, file_filter_choices, file_list_page, file_matches, local_files_visible_to,
    with_rates,
)
from models_catalog.services.convert import convert_offered
from models_catalog.services.forget import local_file_forget
from models_catalog.services.sidecar_export import sidecars_export
from models_catalog.services.upload import Uploaded, UploadRefused, UploadWaitsForQueue, local_file_upload
from models_catalog.upload_handlers import LimitedTemporaryFileUploadHandler
from workers.modelfiles.self_description import SelfDescription

FILTER_NAMES = ("search", "type", "base_model", "safety", "match", "state", "folder", "status", "origin", "format",
                "family", "kind", "updates")
# The first page polls even when nothing on it is pending, so files registered meanwhile (by the
# CLI, an upload in another tab, a push) show up; quickly while something is being read.
POLL_PENDING = "every 2s"
POLL_IDLE = "every 10s"


@login_required
def file_list(request: HttpRequest) -> HttpResponse:
    form = FileFilterForm(request.GET)  # every field optional: an empty query is valid
    params = form.cleaned_or_defaults()
    page = file_list_page(FileQuery(user=request.user, **params))
    with_rates([row.file for row in page.rows])
    _with_row_extras(page.rows, user=request.user)
    keep = {k: v for k, v in params.items() if v and k != "cursor" and v != getattr(FileQuery, k, None)}
    poll = POLL_PENDING if page.pending else POLL_IDLE if page.is_first else None
    context = {
        "form": form, "params": params, "page": page, "poll": poll, "sorts": FILE_SORTS,
        "filtered": any(params[n] for n in FILTER_NAMES), "choices": file_filter_choices(),
        "next_url": f"?{urlencode(keep | {'cursor': page.next_cursor})}" if page.next_cursor else None,
        "first_url": f"?{urlencode(keep)}", "clear_url": "?" + urlencode({"scope": params["scope"]} if "scope" in keep else {}),
        # The rows in Jinja2 (models_catalog/jinja_env.py): a quarter of the page's CPU in Django's templates.
        "rows_html": partial_html("models_catalog/_file_rows.html", {"page": page, "user": request.user}, request=request),
    }
    if request.headers.get("HX-Request"):
        return render(request, "models_catalog/_file_results.html", context)
    return render(request, "models_catalog/file_list.html", context)


@login_required
@require_http_methods(["POST"])
def export_sidecars(request: HttpRequest) -> HttpResponse:
    """The folder filter's button: `.civitai.info` beside each identified file of that folder, written
    now (small JSON files; the service re-checks every path) and reported as a message."""
    folder = request.POST.get("folder", "").strip()[:4096]
    outcome = sidecars_export(owner=request.user, folder=folder, force=False)
    if outcome.error:
        messages.error(request, f"No sidecars written: {outcome.error}")
    else:
        skipped = [r for r in outcome.results if r.action == "skipped"]
        text = f"{outcome.written} sidecar{'s' if outcome.written != 1 else ''} written in {outcome.folder}"
        if skipped:
            text += f"; {len(skipped)} kept or skipped (" + "; ".join(
                f"{r.path.rsplit('/', 1)[-1]}: {r.why}" for r in skipped[:5]) + (" …" if len(skipped) > 5 else "") + ")"
        (messages.warning if skipped else messages.success)(request, text)
    return redirect(f"{reverse('catalog:file_list')}?{urlencode({'folder': folder})}")


def _with_row_extras(rows, *, user) -> None:
    """Each row's cover thumbnail and prompt text: two queries for the page, whatever its length."""
    from models_catalog.services.preferences import nsfw_max_level_for

    covers = previews_for_versions([r.identity.version_id for r in rows],
                                   nsfw_max_level=nsfw_max_level_for(user), per_version=1) if rows else {}
    for row in rows:
        found = covers.get(row.identity.version_id) or []
        row.cover = found[0] if found else None
        row.usage = prompt_usage(file_name=row.file.name, trained_words=row.identity.trained_words,
                                 model_type=row.identity.model_type)


def _file_previews(lf: LocalFile, identity, user) -> dict:
    from models_catalog.services.local_previews import local_preview_candidate
    from models_catalog.services.preferences import nsfw_max_level_for

    previews = previews_for_versions([identity.version_id], nsfw_max_level=nsfw_max_level_for(user))
    return {
        "previews": previews.get(identity.version_id, []),
        # Only a stat here: the thumbnail is made when the browser asks for it.
        "local_preview_url": reverse("catalog:file_preview", args=[lf.pk]) if local_preview_candidate(local_file=lf) else "",
        "usage": prompt_usage(file_name=lf.name, trained_words=identity.trained_words, model_type=identity.model_type),
    }


def _fingerprint_summary(lf: LocalFile) -> dict | None:
    fp = lf.fingerprint if isinstance(lf.fingerprint, dict) else None
    if not fp:
        return None
    components = fp.get("components") if isinstance(fp.get("components"), dict) else {}
    return {
        "content_id": fp.get("content_id") or "", "precision_id": fp.get("precision_id") or "",
        "bf16_id": fp.get("bf16_id") or "",
        "fp8_id": fp.get("fp8_id") or "",
        "e5m2_id": fp.get("e5m2_id") or "",
        "folded_id": fp.get("folded_id") or "",
        "tensors": fp.get("tensors"), "parameters": fp.get("parameters"), "nbytes": fp.get("nbytes"),
        "dtypes": sorted((fp.get("dtypes") or {}).items()) if isinstance(fp.get("dtypes"), dict) else [],
        "components": sorted((name, c) for name, c in components.items() if isinstance(c, dict)),
    }


@login_required
def file_detail(request: HttpRequest, pk: int) -> HttpResponse:
    lf = get_object_or_404(local_files_visible_to(user=request.user).select_related("hashes").prefetch_related("members"), pk=pk)
    with_rates([lf])
    hashes = FileHashes.objects.filter(local_file=lf).first()
    identity = file_identities([lf], viewer=request.user)[lf.pk]
    context = {
        "f": lf, "hashes": hashes, "identity": identity, "lookups": civitai_lookups_for(hashes),
        # Quickly while it is read; slowly while only a Civitai answer is awaited (it may be minutes away).
        "poll": None if identity.is_finished else POLL_PENDING if not lf.is_finished else POLL_IDLE,
        "findings": [x for x in (lf.safety_findings or []) if isinstance(x, dict)],
        "fingerprint": _fingerprint_summary(lf), "matches": file_matches(lf, request.user),
        "can_convert": convert_offered(lf, request.user),
        **_file_previews(lf, identity, request.user),
        "described": SelfDescription.from_json(lf.self_description),
    }
    context["manual_link"] = next((m for m, _, _ in context["matches"] if m.kind == "manual"), None)
    template = "models_catalog/_file_status.html" if request.headers.get("HX-Request") else "models_catalog/file_detail.html"
    return render(request, template, context)


@login_required
@require_http_methods(["POST"])
def file_forget(request: HttpRequest, pk: int) -> HttpResponse:
    """Forget the row (and its hashes and matches); an upload's stored copy goes too, a registered file stays."""
    lf = get_object_or_404(local_files_visible_to(user=request.user), pk=pk)
    if lf.quarantined_at is not None:  # forgetting it would leave the file in the quarantine folder, unlisted
        messages.error(request, f"{lf.name} is in quarantine: restore it or purge it on the Quarantine page.")
        return redirect("catalog:file_detail", pk=lf.pk)
    messages.success(request, local_file_forget(local_file=lf).summary)
    return redirect("catalog:file_list")


def _upload_error(request: HttpRequest, message: str, status: int = 400) -> HttpResponse:
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"error": message}, status=status)
    messages.error(request, message)
    return render(request, "models_catalog/upload.html", {"max_bytes": settings.MAX_UPLOAD_BYTES}, status=status)


# Upload handlers can only be swapped before anything reads request.POST, and
# the CSRF check reads it: so the outer view is csrf_exempt and sets the
# handler, and the inner one is csrf_protect (Django's documented pattern).
@csrf_exempt
@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "models_catalog/upload.html", {"max_bytes": settings.MAX_UPLOAD_BYTES})
    limit = settings.MAX_UPLOAD_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + 64 * 1024:  # multipart framing adds a little
        return _upload_error(request, f"the upload is larger than the limit of {limit:,} bytes", status=413)
    request.upload_handlers = [LimitedTemporaryFileUploadHandler(request)]
    return _upload_post(request)


@csrf_protect
def _upload_post(request: HttpRequest) -> HttpResponse:
    limit = settings.MAX_UPLOAD_BYTES
    handler = request.upload_handlers[0]
    uploaded = request.FILES.get("file")
    if getattr(handler, "over_limit", False):
        return _upload_error(request, f"the upload is larger than the limit of {limit:,} bytes", status=413)
    if uploaded is None:
        return _upload_error(request, "no file was sent: choose a model file to upload")
    try:
        result = local_file_upload(uploaded=uploaded, owner=request.user)
    except UploadRefused as exc:
        return _upload_error(request, str(exc), status=413 if "limit" in str(exc) else 400)
    except UploadWaitsForQueue as exc:
        # Stored: say that it waits, not "try again" (which would only store a second copy).
        service_down_warning(exc, f"page {request.path}")
        result = Uploaded(exc.local_file)
        messages.warning(request, f"Uploaded {exc.local_file.name}, but {exc}.")
    lf = result.local_file
    if result.already_had:
        # Shown on the file page, where both the form's redirect and the upload script's navigation land.
        messages.info(request, f"You already have this file ({lf.name}): nothing new was stored.")
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"id": lf.pk, "name": lf.name, "url": lf_url(lf), "already_had": result.already_had},
                            status=200 if result.already_had else 201)
    return redirect("catalog:file_detail", pk=lf.pk)


def lf_url(lf: LocalFile) -> str:
    from django.urls import reverse

    return reverse("catalog:file_detail", args=[lf.pk])
