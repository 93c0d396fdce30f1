"""Duplicates across names, containers and precisions, with a keeper that loses nothing.

The database narrows the library down to the files that share a key with
another file (GROUP BY ... HAVING COUNT > 1 over indexed columns), so only
duplicates are ever loaded into Python: a 100,000-file library with few
duplicates costs a few grouped index scans, not 100,000 objects. For one owner
those scans read only indexes and return a small superset, which Python makes
exact (_may_share_a_key, _sharing_a_key: docs/BENCHMARKS.md, load test).
What the groups mean lives in `models_catalog.duplicate_relations`.

The pages, exports and API show `shown_duplicate_groups`: the same answer, cached until the next write
to what it is made of (models_catalog/library_revision.py).
"""
from __future__ import annotations

import pickle
import zlib

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, JSONField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import JSONObject

from models_catalog import library_revision
from models_catalog.duplicate_relations import (
    PREFERENCES, Copy, DuplicateGroup, Member, duplicate_groups_of, precision_of,
)
from models_catalog.models import FileHashes, LocalFile, Match

__all__ = ["PREFERENCES", "DuplicateGroup", "Member", "duplicate_groups", "precision_of", "shown_duplicate_groups"]

# Where a group key lives; each one is indexed (see the models' db_index / indexes). AutoV3 is not one:
# equal tensor data gives equal content_id, and its GROUP BY was a sixth of the time on PostgreSQL.
KEY_FIELDS = ("hashes__sha256", "hashes__folder_digest", "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id")


def duplicate_groups(*, owner=None, prefer_precision: str = "lossless") -> list[DuplicateGroup]:
    """Groups of one owner's files holding the same model. owner=None: everyone's, still grouped per owner."""
    if prefer_precision not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}")
    files = LocalFile.objects.filter(status=LocalFile.Status.DONE)
    files = files.filter(quarantined_at__isnull=True)  # quarantined files are in no group
    if owner is None:
        rows = _rows(files.filter(_shares_a_key(files)))
    else:
        files = files.filter(owner=owner)
        rows = _sharing_a_key(_rows(files.filter(_may_share_a_key(owner))))
    return duplicate_groups_of(_copies(rows), prefer=prefer_precision)


def shown_duplicate_groups(*, owner, prefer_precision: str = "lossless") -> list[DuplicateGroup]:
    """duplicate_groups for one owner, to show (pages, exports, API): cached under the library revision.

    What acts on files (the duplicate actions, the CLI) calls duplicate_groups and reads the database:
    a cached answer is as new as the last write the revision saw, and a delete must not rest on that."""
    seconds = settings.DUPLICATES_CACHE_SECONDS
    usable = seconds > 0 and library_revision.shared() and library_revision.usable()
    revision = library_revision.current() if usable else None
    if revision is None:
        return duplicate_groups(owner=owner, prefer_precision=prefer_precision)
    key = f"modelxref:duplicates:{revision}:{getattr(owner, 'pk', owner)}:{prefer_precision}"
    try:
        stored = cache.get(key)
    except Exception:  # the cache is an optimisation (library_revision.current logs why it is down)
        stored = None
    if stored is not None:
        return pickle.loads(zlib.decompress(stored))
    groups = duplicate_groups(owner=owner, prefer_precision=prefer_precision)
    # zlib level 1: a 1,000-group library is 630 KB pickled, 100 KB so, for ~2 ms
    try:
        cache.set(key, zlib.compress(pickle.dumps(groups, protocol=pickle.HIGHEST_PROTOCOL), 1), seconds)
    except Exception:
        pass
    return groups


def _shares_a_key(files: QuerySet) -> Q:
    """Files whose value of some key is held by at least one other of these files (everyone's)."""
    shared = Q()
    for key in KEY_FIELDS:
        repeated = (files.exclude(**{key: ""}).exclude(**{f"{key}__isnull": True}).order_by()
                    .values(key).annotate(n=Count("id")).filter(n__gt=1).values(key))
        shared |= Q(**{f"{key}__in": repeated})
    return shared | _folded_pairs(files)


def _folded_pairs(files: QuerySet) -> Q:
    """A kohya Flux LoRA and diffusers' conversion of it: one's folded_id is the other's content_id
    (lora_folding.py). A superset (every file with a folded id): groups of one are dropped anyway."""
    return ~Q(folded_id="") | Q(content_id__in=files.exclude(folded_id="").order_by().values("folded_id"))


def _may_share_a_key(owner) -> Q:
    """One owner's files with a key value held more than once among ALL the owner's rows: a superset.

    Each GROUP BY is an index-only range of an owner-led partial index ((owner, key) WHERE key <> ''),
    with no heap access, because it does not ask whether the other holder is done and not quarantined
    (that needs the table); _sharing_a_key then drops the rows that share only with such files. The
    SHA256 / folder-digest keys are grouped on FileHashes' own owner copy (no join to LocalFile) and
    select file ids, so that the whole condition is on LocalFile's row and is checked before the join."""
    shared = Q()
    for key in KEY_FIELDS:
        if key.startswith("hashes__"):
            column = key.removeprefix("hashes__")
            hashes = FileHashes.objects.filter(owner=owner).exclude(**{column: ""}).order_by()
            repeated = hashes.values(column).annotate(n=Count("*")).filter(n__gt=1).values(column)
            shared |= Q(id__in=hashes.filter(**{f"{column}__in": repeated}).values("local_file_id"))
            continue
        repeated = (LocalFile.objects.filter(owner=owner).exclude(**{key: ""}).order_by()
                    .values(key).annotate(n=Count("*")).filter(n__gt=1).values(key))
        shared |= Q(**{f"{key}__in": repeated})
    return shared | _folded_pairs(LocalFile.objects.filter(owner=owner))


def _sharing_a_key(rows: list[dict]) -> list[dict]:
    """The rows holding some key value that another of these rows holds.

    Exact on _may_share_a_key's superset: a value two done, unquarantined files hold is repeated among all
    the owner's rows, so every such holder is in the superset; a value held once in it is held by no other
    candidate. The candidates are therefore the files sharing a key with another done, unquarantined file
    of the owner, as the grouping over those files alone would find them."""
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        for key in _keys_of(r):
            seen[key] = seen.get(key, 0) + 1
    return [r for r in rows if any(seen[key] > 1 for key in _keys_of(r))]


def _keys_of(row: dict) -> list[tuple[str, str]]:
    keys = [(key, row[key]) for key in KEY_FIELDS if row[key]]
    if row["folded_id"]:  # the content id of its diffusers conversion: a content key like its own
        keys.append(("content_id", row["folded_id"]))
    return keys


ROW_FIELDS = (
    "id", "owner_id", "name", "path", "host", "format", "size", "device", "inode", "safety_verdict",
    "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id", "created_at", "fingerprint__dtypes", "architecture_kind",
    "hashes__sha256", "hashes__folder_digest", "hashes__autov3_full",
)


def _rows(candidates: QuerySet) -> list[dict]:
    """The candidates with their byte-exact source match (exact name first), in one query.

    The match comes in as one correlated subquery (an index probe a row) rather than a second query listing
    every candidate's id: at 2,000 candidates that IN list cost more to build and parse than the probes."""
    best = (Match.objects.filter(local_file=OuterRef("pk"), kind__in=(Match.Kind.EXACT, Match.Kind.RENAMED))
            .order_by("kind", "id")  # "exact" sorts before "renamed"
            .values(source=JSONObject(kind="kind", model="model__name", model_id="model_id"))[:1])
    candidates = candidates.annotate(source=Subquery(best, output_field=JSONField()))
    rows = []
    for *values, source in candidates.order_by().values_list(*ROW_FIELDS, "source"):
        source = source or {}
        rows.append({**dict(zip(ROW_FIELDS, values)), "source_kind": source.get("kind"),
                     "source_model": source.get("model"), "source_model_id": source.get("model_id")})
    return rows


def _copies(rows: list[dict]) -> list[Copy]:
    return [Copy(
        id=r["id"], owner_id=r["owner_id"], name=r["name"], path=r["path"], host=r["host"], format=r["format"],
        precision=precision_of(r["fingerprint__dtypes"]), size=r["size"] or 0,
        sha256=r["hashes__sha256"] or r["hashes__folder_digest"] or "", autov3=r["hashes__autov3_full"] or "",
        content_id=r["content_id"], precision_id=r["precision_id"], bf16_id=r["bf16_id"], fp8_id=r["fp8_id"],
        e5m2_id=r["e5m2_id"], folded_id=r["folded_id"], layout=r["architecture_kind"],
        device=r["device"], inode=r["inode"],
        verdict=r["safety_verdict"], verified=r["source_kind"] is not None,
        source_name=r["source_kind"] == Match.Kind.EXACT,
        created=r["created_at"].timestamp() if r["created_at"] else 0.0,
        model=r["source_model"], model_id=r["source_model_id"],
    ) for r in rows]
