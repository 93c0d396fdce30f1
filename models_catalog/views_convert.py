"""Convert to safetensors from a file's page: what will be written first, then a confirmed POST.

The page calls the same services as `manage.py convert` and POST /api/v1/files/{id}/convert/:
`checkpoint_plan` for the preview (the scan and the pickle only, no tensor data), then
`convert_job_create`, whose job scans the file again before it writes anything.
"""
from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from models_catalog.forms import ConvertForm
from models_catalog.models import LocalFile
from models_catalog.services.convert import (
    checkpoint_plan, convert_default_output, convert_job_create,
)
from models_catalog.services.paths import PathRefused, printable, refusal_reason
from workers.convert import DTYPE_CHOICES, ConvertError

METADATA_SHOWN = 50


@login_required
@require_http_methods(["GET", "POST"])
def file_convert(request: HttpRequest, pk: int) -> HttpResponse:
    # Only the owner converts a file: the output goes under the owner's roots (another user's is a 404).
    lf = get_object_or_404(LocalFile.objects.filter(owner=request.user), pk=pk)
    context: dict = {"f": lf}
    try:
        plan, sizes = checkpoint_plan(owner=request.user, path=lf.path)
    except PathRefused as exc:
        context["problem"] = refusal_reason(lf.path, str(exc), user=request.user)
        return render(request, "models_catalog/convert.html", context, status=400)
    except ConvertError as exc:
        context.update(problem=str(exc), findings=exc.findings[:50])
        return render(request, "models_catalog/convert.html", context, status=400)
    suspicious = plan.verdict == "suspicious"
    form = ConvertForm(request.POST if request.method == "POST" else None, sizes=sizes, suspicious=suspicious)
    context.update(plan=plan, sizes=sizes, form=form, suspicious=suspicious,
                   metadata=list(plan.metadata.items())[:METADATA_SHOWN],
                   more_metadata=max(0, len(plan.metadata) - METADATA_SHOWN),
                   outputs={d: printable(convert_default_output(Path(lf.path), d)) for d in DTYPE_CHOICES})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = convert_job_create(owner=request.user, local_file=lf, out=data["out"] or None, dtype=data["dtype"],
                                     allow_suspicious=data.get("allow_suspicious", False))
        except PathRefused as exc:
            form.add_error("out", refusal_reason(data["out"] or lf.path, str(exc), user=request.user))
        except ConvertError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Converting {lf.name} to {job.params['out']} in the background.")
            return redirect("catalog:job_detail", pk=job.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "models_catalog/convert.html", context, status=status)
