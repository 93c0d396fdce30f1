"""Pages of the duplicate actions: a confirm page that shows the plan, the Quarantine page, an action's job.

Nothing changes on a GET: the confirm page is a dry run (no file is read or changed, no row written).
Only its POST (a form with the CSRF token and the plan's exact ids) starts the job, which checks
every file again when it runs on a worker.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from models_catalog.models import LocalFile, QuarantineEntry
from models_catalog.selectors import visible_jobs
from models_catalog.services.duplicate_actions import ACTIONS, group_plan_for
from models_catalog.services.duplicates import PREFERENCES
from models_catalog.services.file_action_jobs import file_action_job_create
from models_catalog.services.file_actions import hardlink_copies, purge_quarantine, quarantine_files, restore_files

QUARANTINE_OPS = ("restore", "purge")
MAX_IDS = 1000

TITLES = {
    "hardlink": "Replace exact copies with hard links",
    "quarantine": "Move exact copies into quarantine",
    "restore": "Restore from quarantine",
    "purge": "Delete quarantined files for good",
}
EXPLAIN = {
    "hardlink": ("Each copy below is hashed again together with the keeper; only when both still hold exactly the "
                 "keeper's bytes is the copy replaced, atomically, by a hard link to it: both names stay and show "
                 "the same file, stored once. Editing one of them afterwards changes both."),
    "quarantine": ("Each file below is moved into the quarantine folder, keeping its path under its model root. "
                   "Nothing is deleted: restore puts it back, purge deletes it for good."),
    "restore": "Each file below is moved back to where it was.",
    "purge": "Each file below is deleted for good. This cannot be undone.",
}


def _ids(values) -> list[int]:
    ids = []
    for value in values[:MAX_IDS]:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise Http404("not an id") from None
        if not 0 < n < 2**62:
            raise Http404("not an id")
        ids.append(n)
    return list(dict.fromkeys(ids))


def _button(action: str, n: int) -> str:
    files = f"{n} file{'s' if n != 1 else ''}"
    return {"hardlink": f"Replace {files} with hard links", "quarantine": f"Move {files} into quarantine",
            "restore": f"Restore {files}", "purge": f"Delete {files} for good"}[action]


def _confirm_page(request, *, action: str, report, post_url: str, fields: list[tuple[str, object]], back_url: str,
                  heading_extra: str = "") -> HttpResponse:
    planned = [i for i in report.items if i.outcome == "planned"]
    if action == "quarantine":
        freed = f"{filesizeformat(report.bytes_on_purge)} freed once purged"
    elif action in ("hardlink", "purge"):
        freed = f"{filesizeformat(report.bytes_freed)} freed"
    else:
        freed = ""
    return render(request, "models_catalog/action_confirm.html", {
        "action": action, "title": TITLES[action], "explain": EXPLAIN[action], "report": report, "planned": planned,
        "post_url": post_url, "fields": fields, "back_url": back_url, "button": _button(action, len(planned)),
        "freed": freed, "heading_extra": heading_extra,
    })


# --- duplicates ------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def duplicate_action(request: HttpRequest, action: str) -> HttpResponse:
    if action not in ACTIONS:
        raise Http404("no such action")
    if request.method == "POST":
        return _duplicate_action_start(request, action)
    prefer = request.GET.get("prefer") if request.GET.get("prefer") in PREFERENCES else "lossless"
    group_id = _ids([request.GET.get("group")])[0]
    plan = group_plan_for(owner=request.user, file_id=group_id, action=action, prefer_precision=prefer)
    if plan is None:
        raise Http404("no duplicate group of yours holds this file")
    if action == "hardlink":
        report = hardlink_copies(owner=request.user, keeper_id=plan.keeper_id, copy_ids=plan.file_ids, dry_run=True)
    else:
        report = quarantine_files(owner=request.user, file_ids=plan.file_ids, dry_run=True)
    fields = [("file_ids", i.file_id) for i in report.items if i.outcome == "planned"]
    if action == "hardlink":
        fields.append(("keeper_id", plan.keeper_id))
    keeper = next((m for m in plan.group.members if m.id == plan.keeper_id), None)
    return _confirm_page(request, action=action, report=report, fields=fields,
                         post_url=reverse("catalog:duplicate_action", args=[action]),
                         back_url=f"{reverse('catalog:duplicates')}?prefer={prefer}",
                         heading_extra=f"Keeper: {keeper.path}" if keeper else "")


def _duplicate_action_start(request: HttpRequest, action: str) -> HttpResponse:
    if request.POST.get("confirm") != "yes":
        return redirect("catalog:duplicates")
    file_ids = _ids(request.POST.getlist("file_ids"))
    keeper_id = _ids([request.POST.get("keeper_id")])[0] if action == "hardlink" else None
    wanted = set(file_ids) | ({keeper_id} if keeper_id else set())
    if not file_ids or LocalFile.objects.filter(owner=request.user, pk__in=wanted).count() != len(wanted):
        raise Http404("no such file (or it is not yours)")
    params = {"keeper_id": keeper_id, "copy_ids": file_ids} if action == "hardlink" else {"file_ids": file_ids}
    job = file_action_job_create(owner=request.user, kind=action, params=params, dry_run=False)
    messages.success(request, f"{TITLES[action]}: started. Each file is checked again before it is changed.")
    return redirect("catalog:action_job", pk=job.pk)


# --- quarantine ------------------------------------------------------------------------


@login_required
def quarantine(request: HttpRequest) -> HttpResponse:
    entries = list(QuarantineEntry.objects.filter(owner=request.user).select_related("local_file"))
    return render(request, "models_catalog/quarantine.html", {
        "entries": entries, "total": sum(e.size for e in entries),
    })


@login_required
@require_http_methods(["GET", "POST"])
def quarantine_action(request: HttpRequest, op: str) -> HttpResponse:
    if op not in QUARANTINE_OPS:
        raise Http404("no such action")
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            return redirect("catalog:quarantine")
        ids = _ids(request.POST.getlist("entry_ids"))
        if not ids or QuarantineEntry.objects.filter(owner=request.user, pk__in=ids).count() != len(ids):
            raise Http404("no such quarantine entry (or it is not yours)")
        job = file_action_job_create(owner=request.user, kind=op, params={"entry_ids": ids}, dry_run=False)
        messages.success(request, f"{TITLES[op]}: started.")
        return redirect("catalog:action_job", pk=job.pk)
    everything = op == "purge" and request.GET.get("all") == "1"
    ids = None if everything else _ids(request.GET.getlist("entry"))
    if ids == []:
        messages.error(request, "Choose the files first.")
        return redirect("catalog:quarantine")
    if ids is not None and QuarantineEntry.objects.filter(owner=request.user, pk__in=ids).count() != len(ids):
        raise Http404("no such quarantine entry (or it is not yours)")
    if op == "restore":
        report = restore_files(owner=request.user, entry_ids=ids, dry_run=True)
    else:
        report = purge_quarantine(owner=request.user, entry_ids=ids, dry_run=True)
    # The exact entries shown are the ones confirmed: one quarantined meanwhile is not purged with them.
    fields = [("entry_ids", i.entry_id) for i in report.items if i.outcome == "planned"]
    return _confirm_page(request, action=op, report=report, fields=fields,
                         post_url=reverse("catalog:quarantine_action", args=[op]), back_url=reverse("catalog:quarantine"))


# --- jobs --------------------------------------------------------------------------------


@login_required
def action_job(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(visible_jobs(request.user), pk=pk)
    if not job.is_file_action:
        raise Http404("not a file action")
    result = job.result if isinstance(job.result, dict) else {}
    context = {"job": job, "title": TITLES.get(job.kind, job.get_kind_display()), "items": result.get("items") or [],
               "notes": result.get("notes") or [], "result": result}
    template = "models_catalog/_action_job_status.html" if request.headers.get("HX-Request") else "models_catalog/action_job.html"
    return render(request, template, context)
