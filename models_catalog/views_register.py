"""Register a file or folder under the model roots from the web page.

The page calls the same service as `manage.py register` and POST /api/v1/files/register/,
and tells a refusal in the same words as the API.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from models_catalog.api_errors import service_down_warning
from models_catalog.forms import RegisterPathForm
from models_catalog.services.enqueue import QueueUnavailable
from models_catalog.services.paths import ROOTS_EXAMPLE, model_roots_for, printable, refusal_reason, root_problem
from models_catalog.services.register import RegisterOutcome, local_file_register

# A folder can hold thousands of files: each list shows this many and counts the rest.
ROWS_SHOWN = 50
TEMPLATE = "models_catalog/register.html"


@login_required
@require_http_methods(["GET", "POST"])
def register_path(request: HttpRequest) -> HttpResponse:
    context = {"roots": [(printable(root), root_problem(root)) for root in model_roots_for(request.user)],
               "roots_example": ROOTS_EXAMPLE}
    if request.method == "GET":
        # ?path= is how a click on a root fills the box, with or without JavaScript.
        form = RegisterPathForm(initial={"path": request.GET.get("path", "")})
        return render(request, TEMPLATE, {**context, "form": form})
    form = RegisterPathForm(request.POST)
    if not form.is_valid():
        return render(request, TEMPLATE, {**context, "form": form}, status=400)
    outcome = local_file_register(paths=[form.cleaned_data["path"]], owner=request.user)
    if outcome.queue_error:
        service_down_warning(QueueUnavailable(outcome.queue_error), f"page {request.path}")
        messages.warning(request, outcome.queue_error)  # the rows are kept; the reaper sends them later
    status = 400 if outcome.counts["refused"] and not outcome.registered else 200
    return render(request, TEMPLATE, {**context, "form": form, "outcome": _outcome_for_page(outcome, user=request.user)}, status=status)


def _outcome_for_page(outcome: RegisterOutcome, *, user) -> dict:
    """The outcome as counts and lists to show: worst news first, paths made printable. The outcome
    keeps a sample of each kind and counts them all: only ROWS_SHOWN of each are made printable."""
    refused = [{"path": path, "note": refusal_reason(path, why, user=user)} for path, why in outcome.refused[:ROWS_SHOWN]]
    parts = [
        ("refused", "Refused", refused),
        ("failed", "Failed (stored with the reason)",
         [{"path": printable(lf.path), "id": lf.pk, "note": lf.error} for lf in outcome.failed[:ROWS_SHOWN]]),
        ("queued", "Queued for hashing", [{"path": printable(lf.path), "id": lf.pk} for lf in outcome.queued[:ROWS_SHOWN]]),
        ("unchanged", "Unchanged since they were hashed, or already on their way",
         [{"path": printable(lf.path), "id": lf.pk} for lf in outcome.unchanged[:ROWS_SHOWN]]),
    ]
    counts = outcome.counts
    return {
        "counts": dict(counts),
        "nothing_found": not any(counts.values()),
        "lists": [{"key": key, "title": title, "rows": rows, "more": max(0, counts[key] - len(rows)),
                   "open": key in ("refused", "failed") or counts[key] <= 10}
                  for key, title, rows in parts if rows],
    }
