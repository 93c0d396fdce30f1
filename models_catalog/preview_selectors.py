"""What the pages show of preview images: the first few per version, blurred above the viewer's level.

One query for any number of versions (My files rows use it with the page's version ids), so the
list keeps its fixed query count.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.urls import reverse

from models_catalog.models import SourceImage


@dataclass(frozen=True)
class Preview:
    url: str  # our thumbnail view ("" when not downloaded: the page shows a placeholder)
    placeholder_url: str  # the blurhash decoded ("" without one): what a blurred image shows until clicked
    blurred: bool
    nsfw_level: int
    width: int | None
    height: int | None
    state: str
    error: str
    meta: dict


def previews_for_versions(version_ids, *, nsfw_max_level: int, per_version: int | None = None) -> dict[int, list[Preview]]:
    per_version = settings.PREVIEWS_PER_VERSION if per_version is None else per_version
    ids = [v for v in set(version_ids) if v is not None]
    out: dict[int, list[Preview]] = {}
    if not ids or per_version <= 0:
        return out
    rows = SourceImage.objects.filter(version_id__in=ids, position__lt=per_version).order_by("version_id", "position")
    for row in rows:
        done = row.state == SourceImage.State.DONE and bool(row.thumb_name)
        out.setdefault(row.version_id, []).append(Preview(
            url=reverse("catalog:preview_image", args=[row.pk]) if done else "",
            placeholder_url=reverse("catalog:preview_placeholder", args=[row.pk]) if row.blurhash else "",
            # Unknown level (0) counts as above any threshold but "show everything".
            blurred=(row.nsfw_level or 32) > nsfw_max_level, nsfw_level=row.nsfw_level,
            width=row.width, height=row.height, state=row.state, error=row.error, meta=row.meta or {},
        ))
    return out
