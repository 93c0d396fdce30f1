"""Write the sidecars A1111 / Forge / ComfyUI tools read beside identified files: `<stem>.civitai.info`
(SD Civitai Helper's layout: the Civitai version JSON, indent 4) and `<stem>.preview.png` when a
preview thumbnail is stored. import_hashes reads them back (workers/sources/local_sidecars.py).

Registered paths are hostile: a file is written only beside a registered file that still lies under
the owner's roots (registered_path_problem, checked now, not at register), through a folder opened
component by component without following links (workers.file_ops.pinned_parent); an existing sidecar
that is a symlink or not a regular file is never touched, one newer than what we know is kept unless
`force`, and every write is a temp file in the same folder renamed over the name (os.replace), so a
reader never sees half a file and a link swapped in at the last moment is replaced, not followed.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from models_catalog.identity import IDENTIFYING_KINDS, best_match
from models_catalog.models import LocalFile, Match, Source, SourceFile, SourceVersion
from models_catalog.services.hashing import registered_path_problem
from models_catalog.services.paths import (
    PathRefused,
    model_roots_for,
    printable,
    resolve_under_roots,
)
from workers.file_ops import FileOpError, lstat_at, pinned_parent

INFO_SUFFIX = ".civitai.info"
PREVIEW_SUFFIX = ".preview.png"
MAX_PREVIEW_BYTES = 16 * 1024 * 1024


def preview_for_version(version: SourceVersion) -> Path | None:
    """A PNG of `version`'s tamest downloaded preview (lowest NSFW level, then Civitai's order), or None
    when none is downloaded. A1111 / Forge / ComfyUI read `.preview.png`; our thumbnails are WebP, so
    the PNG is made once from our own re-encoded thumbnail (never from downloaded bytes)."""
    from models_catalog.models import SourceImage

    image = (SourceImage.objects.filter(version=version, state=SourceImage.State.DONE).exclude(thumb_name="")
             .order_by("nsfw_level", "position").first())
    return _png_of(settings.PREVIEW_DIR / image.thumb_name) if image else None


def _png_of(thumb: Path) -> Path | None:
    png = thumb.with_suffix(".png")
    if png.exists():
        return png
    try:
        from PIL import Image

        with Image.open(thumb) as im:
            tmp = png.with_name(f".{png.name}.tmp")
            im.save(tmp, format="PNG")
        os.chmod(tmp, 0o600)
        os.replace(tmp, png)
    except (OSError, ValueError):
        return None
    return png


@dataclass
class SidecarResult:
    path: str
    action: str  # written | would write | skipped
    why: str = ""


@dataclass
class ExportOutcome:
    folder: str = ""
    error: str = ""  # the folder itself was refused
    results: list[SidecarResult] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(r.action in ("written", "would write") for r in self.results)

    @property
    def skipped(self) -> int:
        return sum(r.action == "skipped" for r in self.results)

    def to_json(self) -> dict:
        return {"folder": self.folder, "error": self.error, "written": self.written, "skipped": self.skipped,
                "results": [asdict(r) for r in self.results]}


def civitai_info_for(version: SourceVersion) -> dict:
    """The version as Civitai's by-hash answer has it (what Civitai Helper saves): the stored answer,
    completed where a version came nested in a model (no modelId/model) or without its files."""
    model = version.model
    info = dict(version.raw) if isinstance(version.raw, dict) else {}
    info.setdefault("id", int(version.external_id) if version.external_id.isdigit() else version.external_id)
    info.setdefault("modelId", int(model.external_id) if model.external_id.isdigit() else model.external_id)
    info.setdefault("name", version.name)
    info.setdefault("trainedWords", list(version.trained_words or []))
    info.setdefault("baseModel", version.base_model or None)
    info.setdefault("description", version.description or None)
    if not isinstance(info.get("model"), dict):
        info["model"] = {"name": model.name, "type": model.type or None, "nsfw": model.nsfw, "poi": False}
    if not info.get("files"):
        info["files"] = [_file_json(sf) for sf in version.files.order_by("-primary", "pk")]
    info.setdefault("images", [])
    info.setdefault("downloadUrl", next((f.get("downloadUrl") for f in info["files"] if f.get("primary")), None))
    return info


def _file_json(sf: SourceFile) -> dict:
    return {"id": int(sf.external_id) if sf.external_id.isdigit() else None, "name": sf.name,
            "sizeKB": sf.size / 1024 if sf.size is not None else None, "type": sf.file_type or "Model",
            "metadata": {"format": sf.format or None, "size": sf.size_kind or None, "fp": sf.fp or None},
            "pickleScanResult": sf.source_scan or None, "pickleScanMessage": sf.source_scan_message or None,
            "hashes": {k: v for k, v in sf.civitai_form().items() if v}, "primary": sf.primary,
            "downloadUrl": sf.download_url or None}


def _identified_files(owner, folder: Path) -> list[tuple[LocalFile, SourceVersion]]:
    """The owner's registered files in `folder` or below, each with the Civitai version it is."""
    prefix = str(folder).rstrip("/") + "/"
    files = list(LocalFile.objects.filter(owner=owner, origin=LocalFile.Origin.REGISTERED, host="", is_folder=False,
                                          quarantined_at__isnull=True)
                 .filter(Q(path__startswith=prefix)).order_by("path"))
    by_file: dict[int, list[Match]] = {}
    for m in (Match.objects.filter(local_file__in=files, kind__in=IDENTIFYING_KINDS,
                                   source_file__version__model__source=Source.CIVITAI)
              .select_related("source_file__version__model")):
        by_file.setdefault(m.local_file_id, []).append(m)
    return [(lf, best_match(by_file[lf.pk]).source_file.version) for lf in files if lf.pk in by_file]


def sidecars_export(*, owner, folder: str | os.PathLike, force: bool = False, dry_run: bool = False) -> ExportOutcome:
    """Write `.civitai.info` (and `.preview.png` when a thumbnail is stored) beside each identified
    file under `folder`, which must lie under the owner's roots. Reports each sidecar: written or why not."""
    outcome = ExportOutcome(folder=str(folder))
    roots = model_roots_for(owner)
    try:
        folder_path = resolve_under_roots(folder, roots=roots)
    except PathRefused as exc:
        outcome.error = str(exc)
        return outcome
    outcome.folder = str(folder_path)
    for lf, version in _identified_files(owner, folder_path):
        path = Path(lf.path)
        try:
            problem = registered_path_problem(lf, path, os.lstat(path), roots=roots)
        except OSError as exc:
            problem = f"cannot read the model file: {exc.strerror or exc}"
        stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
        info_path = path.with_name(stem + INFO_SUFFIX)
        if problem:
            outcome.results.append(SidecarResult(str(info_path), "skipped", problem))
            continue
        data = (json.dumps(civitai_info_for(version), indent=4, ensure_ascii=False) + "\n").encode()
        outcome.results.append(_place(info_path, data, newer_than=version.fetched_at.timestamp(), force=force,
                                      dry_run=dry_run))
        preview = preview_for_version(version)
        if preview is not None:
            outcome.results.append(_place_preview(path.with_name(stem + PREVIEW_SUFFIX), preview, version,
                                                  force=force, dry_run=dry_run))
    return outcome


def _place_preview(target: Path, preview: Path, version: SourceVersion, *, force: bool, dry_run: bool) -> SidecarResult:
    try:
        with open(preview, "rb") as f:  # our own data dir (the thumbnails), not a user path
            data = f.read(MAX_PREVIEW_BYTES + 1)
    except OSError as exc:
        return SidecarResult(str(target), "skipped", f"the stored preview cannot be read: {exc.strerror or exc}")
    if len(data) > MAX_PREVIEW_BYTES:
        return SidecarResult(str(target), "skipped", "the stored preview is too large")
    return _place(target, data, newer_than=version.fetched_at.timestamp(), force=force, dry_run=dry_run)


def _place(target: Path, data: bytes, *, newer_than: float, force: bool, dry_run: bool) -> SidecarResult:
    """Write `data` at `target` atomically, unless what is there must be kept (see the module doc)."""
    shown = str(target)
    try:
        with pinned_parent(target) as (dir_fd, name):
            existing = lstat_at(dir_fd, name)
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    return SidecarResult(shown, "skipped", "is a symbolic link: not followed, not replaced")
                if not stat.S_ISREG(existing.st_mode):
                    return SidecarResult(shown, "skipped", "is not a regular file")
                if existing.st_size == len(data) and _read_at(dir_fd, name, len(data)) == data:
                    return SidecarResult(shown, "skipped", "already up to date")
                if existing.st_mtime >= newer_than and not force:
                    return SidecarResult(shown, "skipped", "a newer file is there (changed after ModelXRef last "
                                                          "heard from Civitai): kept; --force replaces it")
            if dry_run:
                return SidecarResult(shown, "would write", "replaces the older file" if existing else "")
            _write_atomically(dir_fd, name, data)
            return SidecarResult(shown, "written", "replaced the older file" if existing else "")
    except FileOpError as exc:
        return SidecarResult(shown, "skipped", str(exc))
    except OSError as exc:
        return SidecarResult(shown, "skipped", f"cannot write: {exc.strerror or exc}")


def _read_at(dir_fd: int, name: str, limit: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


def _write_atomically(dir_fd: int, name: str, data: bytes) -> None:
    temp = f".{name[:150]}.mxr-sidecar-{secrets.token_hex(6)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # rename() replaces the name itself: a link put there since the check is replaced, not followed.
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def describe(result: SidecarResult) -> str:
    return f"{result.action}: {printable(result.path)}" + (f" ({result.why})" if result.why else "")
