"""Preview images of identified versions: store Civitai's images[], download the first few as thumbnails.

The listing is stored with the version (catalog_store calls version_images_store); downloads run
later on the lookups queue, only for versions one of the users holds a file of, and only the first
PREVIEWS_PER_VERSION images. A failure is a visible state with its reason, tried again by the
hourly refresh (at most MAX_ATTEMPTS times), never an exception out of the task.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from models_catalog.models import Match, SourceImage, SourceVersion
from workers.sources.civitai_data import CivitaiImage
from workers.sources.images import ImageRefused, image_fetch, thumbnail_make

log = logging.getLogger(__name__)

MAX_IMAGES_STORED = 20  # Civitai lists up to ~20 per version; more would only be rows nobody sees
META_MAX_CHARS = 4000  # generation meta is user text (prompts): kept, but bounded
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(hours=1)


def _capped_meta(meta: dict) -> dict:
    try:
        text = json.dumps(meta, default=str)
    except (TypeError, ValueError):
        return {}
    if len(text) <= META_MAX_CHARS:
        return meta
    # Keep the short scalar fields (seed, steps, sampler...) and cut long prompts.
    out = {}
    for key, value in list(meta.items())[:40]:
        if isinstance(value, (int, float, bool)) or value is None:
            out[str(key)[:100]] = value
        elif isinstance(value, str):
            out[str(key)[:100]] = value[:500]
    return out


def version_images_store(*, version_row: SourceVersion, images: tuple[CivitaiImage, ...]) -> None:
    """Upsert the listing; a changed URL at a position starts that image over (new picture)."""
    existing = {img.position: img for img in SourceImage.objects.filter(version=version_row)}
    keep = []
    for position, image in enumerate(images[:MAX_IMAGES_STORED]):
        fields = {
            "url": image.url[:1000], "nsfw_level": image.nsfw_level, "width": image.width, "height": image.height,
            "blurhash": (image.blurhash or "")[:100], "meta": _capped_meta(image.meta),
        }
        row = existing.get(position)
        if row is None:
            SourceImage.objects.create(version=version_row, position=position, **fields)
        else:
            if row.url != fields["url"]:
                _thumb_remove(row)
                fields.update(state=SourceImage.State.LISTED, error="", attempts=0, thumb_name="")
            SourceImage.objects.filter(pk=row.pk).update(**fields)
        keep.append(position)
    for row in existing.values():
        if row.position not in keep:
            _thumb_remove(row)
            row.delete()


def _thumb_remove(row: SourceImage) -> None:
    if row.thumb_name:
        try:
            (settings.PREVIEW_DIR / row.thumb_name).unlink()
        except OSError:
            pass


def thumb_path(row: SourceImage) -> Path | None:
    if row.state != SourceImage.State.DONE or not row.thumb_name:
        return None
    path = settings.PREVIEW_DIR / row.thumb_name
    return path if path.is_file() else None


def thumb_write(data: bytes) -> str:
    """Write a thumbnail under PREVIEW_DIR (0600, random name, atomically); returns its name."""
    settings.PREVIEW_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = secrets.token_hex(16) + ".webp"
    tmp = settings.PREVIEW_DIR / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, settings.PREVIEW_DIR / name)
    return name


def _wanted(version_id: int, *, retry_failed: bool):
    rows = SourceImage.objects.filter(version_id=version_id, position__lt=settings.PREVIEWS_PER_VERSION)
    wanted = rows.filter(state=SourceImage.State.LISTED)
    if retry_failed:
        wanted = rows.filter(state__in=[SourceImage.State.LISTED, SourceImage.State.FAILED],
                             attempts__lt=MAX_ATTEMPTS)
    return list(wanted)


def version_previews_download(*, version_id: int, retry_failed: bool = False, session=None) -> dict[str, int]:
    """Download the first few images of an identified version; returns counts by outcome."""
    counts = {"done": 0, "failed": 0}
    if not Match.objects.filter(source_file__version_id=version_id).exists():
        return counts  # nobody holds this version: its images are listed, not fetched
    for row in _wanted(version_id, retry_failed=retry_failed):
        try:
            data = image_fetch(row.url, allowed_hosts=settings.PREVIEW_IMAGE_HOSTS,
                               max_bytes=settings.PREVIEW_MAX_BYTES, session=session)
            thumb = thumbnail_make(data, max_px=settings.PREVIEW_THUMB_PX)
        except ImageRefused as exc:
            SourceImage.objects.filter(pk=row.pk).update(
                state=SourceImage.State.FAILED, error=str(exc)[:500], attempts=row.attempts + 1,
                attempted_at=timezone.now())
            counts["failed"] += 1
            continue
        name = thumb_write(thumb.data)
        # Compare-and-set on the URL: a refresh that changed the picture meanwhile wins.
        with transaction.atomic():
            updated = SourceImage.objects.filter(pk=row.pk, url=row.url).update(
                state=SourceImage.State.DONE, error="", attempts=row.attempts + 1, attempted_at=timezone.now(),
                thumb_name=name)
        if not updated:
            (settings.PREVIEW_DIR / name).unlink(missing_ok=True)
            continue
        _thumb_remove(row)  # an older thumbnail of the same row, if any
        counts["done"] += 1
    return counts


def previews_retry_due() -> list[int]:
    """Versions the hourly refresh should try again: failed images whose last try is older than
    RETRY_AFTER, and held versions whose download was never sent (the broker was down)."""
    before = timezone.now() - RETRY_AFTER
    first = SourceImage.objects.filter(position__lt=settings.PREVIEWS_PER_VERSION)
    failed = first.filter(state=SourceImage.State.FAILED, attempts__lt=MAX_ATTEMPTS, attempted_at__lt=before)
    held = SourceVersion.objects.filter(files__matches__isnull=False).values("pk")
    unsent = first.filter(state=SourceImage.State.LISTED, version_id__in=held)
    return sorted(set(failed.values_list("version_id", flat=True)) | set(unsent.values_list("version_id", flat=True)))
