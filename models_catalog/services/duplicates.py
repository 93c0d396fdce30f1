"""Duplicates across names, containers and precisions, with a keeper that loses nothing.

The database narrows the library down to the files that share a key with
another file (GROUP BY ... HAVING COUNT > 1 over indexed columns), so only
duplicates are ever loaded into Python: a 100,000-file library with few
duplicates costs a few grouped index scans, not 100,000 objects.
What the groups mean lives in `models_catalog.duplicate_relations`.
"""
from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from models_catalog.duplicate_relations import (
    PREFERENCES, Copy, DuplicateGroup, Member, duplicate_groups_of, precision_of,
)
from models_catalog.models import FileHashes, LocalFile, Match

__all__ = ["PREFERENCES", "DuplicateGroup", "Member", "duplicate_groups", "precision_of"]

# Where a group key lives; each one is indexed (see the models' db_index / indexes). AutoV3 is not one:
# equal tensor data gives equal content_id, and its GROUP BY was a sixth of the time on PostgreSQL.
KEY_FIELDS = ("hashes__sha256", "hashes__folder_digest", "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id")


def duplicate_groups(*, owner=None, prefer_precision: str = "lossless") -> list[DuplicateGroup]:
    """Groups of one owner's files holding the same model. owner=None: everyone's, still grouped per owner."""
    if prefer_precision not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}")
    files = LocalFile.objects.filter(status=LocalFile.Status.DONE)
    files = files.filter(quarantined_at__isnull=True)  # quarantined files are in no group
    if owner is not None:
        files = files.filter(owner=owner)
    candidates = files.filter(_shares_a_key(files, owner=owner))
    return duplicate_groups_of(_copies(candidates), prefer=prefer_precision)


def _shares_a_key(files: QuerySet, *, owner=None) -> Q:
    """Files whose value of some key is held by at least one other of these files.

    For one owner, the SHA256 / folder-digest keys are grouped on FileHashes' own owner copy: a range of
    the (owner, sha256) index, no join to LocalFile. That set may hold a value repeated only through a
    file that is not done or is quarantined; such a file is no candidate, and duplicate_groups_of drops
    the one-member group left, so the groups are the same."""
    shared = Q()
    for key in KEY_FIELDS:
        if owner is not None and key.startswith("hashes__"):
            column = key.removeprefix("hashes__")
            repeated = (FileHashes.objects.filter(owner=owner).exclude(**{column: ""}).order_by()
                        .values(column).annotate(n=Count("id")).filter(n__gt=1).values(column))
            shared |= Q(**{f"{key}__in": repeated})
            continue
        repeated = (files.exclude(**{key: ""}).exclude(**{f"{key}__isnull": True}).order_by()
                    .values(key).annotate(n=Count("id")).filter(n__gt=1).values(key))
        shared |= Q(**{f"{key}__in": repeated})
    return shared


def _copies(candidates: QuerySet) -> list[Copy]:
    sources = _source_matches(candidates)
    rows = candidates.order_by().values(
        "id", "owner_id", "name", "path", "host", "format", "size", "device", "inode", "safety_verdict",
        "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "created_at", "fingerprint__dtypes", "architecture_kind",
        "hashes__sha256", "hashes__folder_digest", "hashes__autov3_full",
    )
    copies = []
    for r in rows:
        verified = sources.get(r["id"])
        copies.append(Copy(
            id=r["id"], owner_id=r["owner_id"], name=r["name"], path=r["path"], host=r["host"], format=r["format"],
            precision=precision_of(r["fingerprint__dtypes"]), size=r["size"] or 0,
            sha256=r["hashes__sha256"] or r["hashes__folder_digest"] or "", autov3=r["hashes__autov3_full"] or "",
            content_id=r["content_id"], precision_id=r["precision_id"], bf16_id=r["bf16_id"], fp8_id=r["fp8_id"], e5m2_id=r["e5m2_id"], layout=r["architecture_kind"],
            device=r["device"], inode=r["inode"],
            verdict=r["safety_verdict"], verified=verified is not None,
            source_name=bool(verified and verified["kind"] == Match.Kind.EXACT),
            created=r["created_at"].timestamp() if r["created_at"] else 0.0,
            model=verified["source_file__version__model__name"] if verified else None,
            model_id=verified["source_file__version__model_id"] if verified else None,
        ))
    return copies


def _source_matches(candidates: QuerySet) -> dict[int, dict]:
    """The byte-exact source match of each candidate that has one (exact name first)."""
    rows = (Match.objects.filter(local_file__in=candidates.values("id"), kind__in=(Match.Kind.EXACT, Match.Kind.RENAMED))
            .order_by("local_file_id", "kind", "id")  # "exact" sorts before "renamed"
            .values("local_file_id", "kind", "source_file__version__model__name", "source_file__version__model_id"))
    found: dict[int, dict] = {}
    for r in rows:
        found.setdefault(r["local_file_id"], r)
    return found
