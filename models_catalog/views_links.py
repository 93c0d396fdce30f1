"""The file page's "Link it by hand" form (POST + CSRF): services/manual_link.py does the work."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.text import capfirst
from django.views.decorators.http import require_http_methods

from models_catalog.models import LocalFile
from models_catalog.services.manual_link import LinkRefused, local_file_link, local_file_unlink


@login_required
@require_http_methods(["POST"])
def file_link(request: HttpRequest, pk: int) -> HttpResponse:
    # The owner's own statement: another user's file (staff included) is a 404.
    lf = get_object_or_404(LocalFile.objects.filter(owner=request.user), pk=pk)
    if request.POST.get("unlink"):
        removed = local_file_unlink(local_file=lf)
        messages.success(request, "Your link was removed." if removed else "There was no link to remove.")
        return redirect("catalog:file_detail", pk=lf.pk)
    try:
        outcome = local_file_link(local_file=lf, url=request.POST.get("url", ""))
    except LinkRefused as exc:
        messages.error(request, f"Not linked: {exc}.")
    else:
        (messages.warning if outcome.url_only else messages.success)(request, capfirst(outcome.message) + ".")
    return redirect("catalog:file_detail", pk=lf.pk)
