"""Store what a source said as catalog rows: SourceModel -> SourceVersion -> SourceFile.

Every file of a version is stored, not only the one we asked about: the
.ckpt beside the .safetensors and the fp16 beside the fp32 become known
locally, so a later copy of one of them is identified with no request.
"""
from __future__ import annotations

from django.db import transaction

from models_catalog.models import Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services.pipeline import versions_stored
from models_catalog.services.previews import version_images_store
from workers import kinds
from workers.sources.civitai_data import CivitaiModel, CivitaiVersion, parse_datetime

CIVITAI_SITE = "https://civitai.com"
HF_SITE = "https://huggingface.co"

# Civitai's spelling -> our field
CIVITAI_HASH_FIELDS = {k.civitai: k.field for k in kinds.CIVITAI_KINDS}


def _civitai_file_fields(f) -> dict:
    # A kind Civitai has not filled in yet is derived from its parent where it is a prefix (kinds.DERIVED).
    hashes = kinds.with_derived({field: f.hashes.get(kind, "").lower() for kind, field in CIVITAI_HASH_FIELDS.items()})
    return {
        **hashes,
        "name": (f.name or "")[:500],
        "size": int(f.size_kb * 1024) if f.size_kb is not None else None,
        "file_type": f.type or "",
        "format": f.format or "",
        "fp": f.fp or "",
        "size_kind": f.size_kind or "",
        "primary": bool(f.primary),
        "source_scan": f.pickle_scan_result or "",
        "source_scan_message": f.pickle_scan_message or "",
        "download_url": (f.download_url or "")[:1000],
    }


def _early_access(raw: dict) -> dict:
    """Civitai's early-access state of a version: `availability` ("EarlyAccess", "Public", ...) and
    `earlyAccessEndsAt` (older answers carry only the date)."""
    availability = raw.get("availability")
    return {"availability": availability[:32] if isinstance(availability, str) else "",
            "early_access_ends_at": parse_datetime(raw.get("earlyAccessEndsAt"))}


@transaction.atomic
def civitai_version_store(*, version: CivitaiVersion, model: CivitaiModel | None = None,
                          site: str = CIVITAI_SITE) -> SourceVersion:
    """`site`: the Civitai site whose API answered; links go there (a .red model is not on .com)."""
    summary = version.model
    model_row, _ = SourceModel.objects.update_or_create(
        source=Source.CIVITAI, external_id=str(version.model_id),
        defaults={
            "name": (summary.name or (model.name if model else None) or f"Civitai model {version.model_id}")[:500],
            "type": summary.type or (model.type if model else "") or "",
            "nsfw": summary.nsfw,
            "url": f"{site}/models/{version.model_id}",
            "site": site,
            **({"description": model.description or "", "raw": model.raw} if model else {}),
        },
    )
    version_row, _ = SourceVersion.objects.update_or_create(
        model=model_row, external_id=str(version.id),
        defaults={
            "name": (version.name or "")[:500],
            "base_model": (version.base_model or "")[:100],
            "trained_words": list(version.trained_words),
            "air": (version.air or "")[:255],
            "description": version.description or "",
            "published_at": version.published_at,
            "url": f"{site}/models/{version.model_id}?modelVersionId={version.id}",
            "site": site,
            "raw": version.raw,
            **_early_access(version.raw),
        },
    )
    _store_files(version_row, {(str(f.id) if f.id is not None else f"name:{f.name}"): _civitai_file_fields(f)
                               for f in version.files})
    version_images_store(version_row=version_row, images=version.images)
    if model is None:
        # An answer to a hash (identification): fetch its previews once committed. The hourly
        # whole-model refresh (model given) stores listings only; previews_retry_due covers the rest.
        versions_stored(version_ids=[version_row.pk])
    return version_row


def _store_files(version_row: SourceVersion, files: dict[str, dict], *, prune: bool = False) -> None:
    """Upsert a version's files in a few queries (a Hub repo can list thousands)."""
    existing = {sf.external_id: sf for sf in SourceFile.objects.filter(version=version_row)}
    new, changed = [], []
    for external_id, fields in files.items():
        row = existing.get(external_id)
        if row is None:
            new.append(SourceFile(version=version_row, external_id=external_id, **fields))
        else:
            for name, value in fields.items():
                setattr(row, name, value)
            changed.append(row)
    SourceFile.objects.bulk_create(new, batch_size=500)
    if changed:
        SourceFile.objects.bulk_update(changed, fields=list(next(iter(files.values())).keys()), batch_size=500)
    if prune:
        SourceFile.objects.filter(version=version_row).exclude(external_id__in=list(files)).delete()


def _hf_version_row(*, repo_id: str, repo_type: str, revision: str) -> tuple[SourceVersion, str]:
    """The repo as a SourceModel, the commit as a SourceVersion; returns the version and the repo URL."""
    repo_url = f"{HF_SITE}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    model_row, _ = SourceModel.objects.update_or_create(
        source=Source.HUGGINGFACE, external_id=f"{repo_type}:{repo_id}",
        defaults={"name": repo_id, "type": "Dataset" if repo_type == "dataset" else "Repository", "url": repo_url},
    )
    version_row, _ = SourceVersion.objects.update_or_create(
        model=model_row, external_id=revision, defaults={"name": revision[:12], "url": f"{repo_url}/tree/{revision}"},
    )
    return version_row, repo_url


@transaction.atomic
def hf_repo_store(*, index) -> SourceVersion:
    """Store a workers.sources.huggingface.RepoIndex: the repo as a model, the commit as a version."""
    version_row, repo_url = _hf_version_row(repo_id=index.repo_id, repo_type=index.repo_type, revision=index.revision)
    _store_files(version_row, {
        f.path[:500]: _hf_file_fields(path=f.path, size=f.size, sha256=f.sha256, git_sha1=f.git_sha1,
                                      repo_url=repo_url, revision=index.revision)
        for f in index.files
    }, prune=True)
    return version_row


def _hf_file_fields(*, path: str, size: int | None, sha256: str | None, git_sha1: str | None, repo_url: str, revision: str) -> dict:
    return {
        "name": path.rsplit("/", 1)[-1][:500],
        "size": size,
        **kinds.with_derived({"sha256": (sha256 or "").lower()}),
        "git_sha1": (git_sha1 or "").lower(),
        "format": _hf_format(path),
        "download_url": f"{repo_url}/resolve/{revision}/{path}"[:1000],
    }


def _hf_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".safetensors", ".sft")):
        return "SafeTensor"
    if lower.endswith((".ckpt", ".pt", ".pth", ".bin", ".pkl")):
        return "PickleTensor"
    return "Other"


@transaction.atomic
def hf_cached_file_store(*, cached) -> SourceFile:
    """One file known from a local HF cache: repo, revision, path and SHA256 from the layout."""
    version_row, repo_url = _hf_version_row(repo_id=cached.repo_id, repo_type=cached.repo_type, revision=cached.revision)
    row, _ = SourceFile.objects.update_or_create(
        version=version_row, external_id=cached.path[:500],
        defaults=_hf_file_fields(path=cached.path, size=cached.size, sha256=cached.sha256, git_sha1=None,
                                 repo_url=repo_url, revision=cached.revision),
    )
    return row
