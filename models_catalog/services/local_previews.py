"""A preview image the user keeps beside a model file (`name.preview.png`, `name.png`, ...).

A1111's Civitai Helper, Forge and ComfyUI-Lora-Manager write these; when one is there it is the
picture the user chose, so pages show it before Civitai's. It is read only from under the owner's
model roots (checked when read, as every path is), never through a symlink, size-capped, and shown
only as our own re-encoded thumbnail, cached under PREVIEW_DIR by (path, size, mtime).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from django.conf import settings

from models_catalog.models import LocalFile
from models_catalog.services.paths import model_roots_for
from models_catalog.services.previews import thumb_write
from workers.sources.images import ImageRefused, thumbnail_make

# The names those tools look for, in their order of preference.
SIDECAR_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp",
                    ".png", ".jpg", ".jpeg", ".webp")


def local_preview_candidate(*, local_file: LocalFile) -> Path | None:
    """The sidecar image beside a registered file, if one is there and may be read; no content read."""
    if local_file.origin != LocalFile.Origin.REGISTERED or local_file.is_folder:
        return None
    model = Path(local_file.path)
    roots = model_roots_for(local_file.owner)
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    for suffix in SIDECAR_SUFFIXES:
        candidate = model.with_name(stem + suffix)
        try:
            st = os.lstat(candidate)
            # resolve(): a folder on the way replaced by a link to elsewhere lands outside the roots.
            resolved = candidate.parent.resolve(strict=True) / candidate.name
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > settings.PREVIEW_MAX_BYTES:
            continue
        if any(resolved.is_relative_to(root) for root in roots):
            return resolved
    return None


def local_preview_thumb(*, local_file: LocalFile) -> Path | None:
    """The cached thumbnail of the file's sidecar image, made on first use; None without one."""
    candidate = local_preview_candidate(local_file=local_file)
    if candidate is None:
        return None
    try:
        fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > settings.PREVIEW_MAX_BYTES:
            return None
        key = hashlib.sha256(f"{local_file.pk}\0{candidate}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
        cached = settings.PREVIEW_DIR / f"local-{key}.webp"
        if cached.is_file():
            return cached
        data = fh.read(settings.PREVIEW_MAX_BYTES + 1)
    try:
        thumb = thumbnail_make(data, max_px=settings.PREVIEW_THUMB_PX)
    except ImageRefused:
        return None
    name = thumb_write(thumb.data)
    os.replace(settings.PREVIEW_DIR / name, cached)
    return cached
