"""Preview thumbnails (login-checked, never a public static URL) and the Settings page."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from models_catalog.models import SourceImage
from models_catalog.selectors import local_files_visible_to
from models_catalog.services.local_previews import local_preview_thumb
from models_catalog.services.preferences import NSFW_LEVELS, nsfw_max_level_for, nsfw_max_level_set
from models_catalog.services.previews import thumb_path
from workers.sources.images import ImageRefused, blurhash_png


def _thumb_response(path) -> FileResponse:
    response = FileResponse(open(path, "rb"), content_type="image/webp")
    # Private: a shared cache must not hand one user's local preview to another.
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
def preview_image(request: HttpRequest, pk: int) -> HttpResponse:
    """A Civitai image's thumbnail: the catalog is shared, so any signed-in user may see it."""
    path = thumb_path(get_object_or_404(SourceImage, pk=pk))
    if path is None:
        raise Http404("no thumbnail")
    return _thumb_response(path)


@login_required
def preview_placeholder(request: HttpRequest, pk: int) -> HttpResponse:
    """A blurred image's stand-in, decoded from Civitai's blurhash (32 x 32): shows colours, not content."""
    row = get_object_or_404(SourceImage.objects.only("blurhash"), pk=pk)
    try:
        data = blurhash_png(row.blurhash)
    except ImageRefused:
        raise Http404("no blurhash") from None
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
def file_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The thumbnail of the image beside a file: only for who may see the file (else 404)."""
    lf = get_object_or_404(local_files_visible_to(user=request.user), pk=pk)
    path = local_preview_thumb(local_file=lf)
    if path is None:
        raise Http404("no local preview")
    return _thumb_response(path)


@login_required
def user_settings(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            nsfw_max_level_set(user=request.user, level=int(request.POST.get("nsfw_max_level", "")))
        except ValueError:
            messages.error(request, "Choose one of the levels offered.")
        else:
            messages.success(request, "Saved.")
        return redirect("catalog:settings")
    return render(request, "models_catalog/settings.html",
                  {"levels": NSFW_LEVELS, "current": nsfw_max_level_for(request.user)})
