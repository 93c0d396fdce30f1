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
        copies = _copies(files.filter(_shares_a_key(files)))
    else:
        files = files.filter(owner=owner)
        copies = _sharing_a_key(_copies(files.filter(_may_share_a_key(owner))))
    return duplicate_groups_of(copies, prefer=prefer_precision)


def shown_duplicate_groups(*, owner, prefer_precision: str = "lossless") -> list[DuplicateGroup]:
    """duplicate_groups for one owner, to show (pages, exports, API): cached under the library revision.

    What acts on files (the duplicate actions, the CLI) calls duplicate_groups and reads the database:
    a cached answer is as new as the last write the revision saw, and a delete must not rest on that."""
    seconds = settings.DUPLICATES_CACHE_SECONDS
    owner_id = getattr(owner, "pk", owner)
    # owner None (everyone's) is not cached: one owner's own writes do not move the library-wide revision
    usable = owner_id is not None and seconds > 0 and library_revision.shared() and library_revision.usable()
    revision = library_revision.current() if usable else None
    own_revision = library_revision.current(owner_id) if revision is not None else None
    if own_revision is None:
        return duplicate_groups(owner=owner, prefer_precision=prefer_precision)
    key = f"modelxref:duplicates:{revision}.{own_revision}:{owner_id}:{prefer_precision}"
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


def _sharing_a_key(copies: list[Copy]) -> list[Copy]:
    """The copies holding some key value that another of these copies holds.

    Exact on _may_share_a_key's superset: a value two done, unquarantined files hold is repeated among all
    the owner's rows, so every such holder is in the superset; a value held once in it is held by no other
    candidate. The candidates are therefore the files sharing a key with another done, unquarantined file
    of the owner, as the grouping over those files alone would find them."""
    keyed = [(c, _keys_of(c)) for c in copies]
    seen: dict[tuple[str, str], int] = {}
    for _, keys in keyed:
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    return [c for c, keys in keyed if any(seen[key] > 1 for key in keys)]


def _keys_of(c: Copy) -> list[tuple[str, str]]:
    """KEY_FIELDS' values of one copy (its sha256 is the SHA256 or the folder digest: they never collide)."""
    keys = [(kind, value) for kind, value in (
        ("bytes", c.sha256), ("content", c.content_id), ("precision", c.precision_id), ("bf16", c.bf16_id),
        ("fp8", c.fp8_id), ("e5m2", c.e5m2_id)) if value]
    if c.folded_id:  # the content id of its diffusers conversion: a content key like its own
        keys.append(("content", c.folded_id))
    return keys


ROW_FIELDS = (
    "id", "owner_id", "name", "path", "host", "format", "size", "device", "inode", "safety_verdict",
    "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id", "created_at", "fingerprint__dtypes",
    "architecture_kind", "hashes__sha256", "hashes__folder_digest", "hashes__autov3_full",
)


def _copies(candidates: QuerySet) -> list[Copy]:
    """The candidates with their byte-exact source match (exact name first), in one query, as Copies
    straight from the rows' tuples (no dict a row: 2,000 candidates are the common case).

    The match comes in as one correlated subquery (an index probe a row) rather than a second query listing
    every candidate's id: at 2,000 candidates that IN list cost more to build and parse than the probes."""
    best = (Match.objects.filter(local_file=OuterRef("pk"), kind__in=(Match.Kind.EXACT, Match.Kind.RENAMED))
            .order_by("kind", "id")  # "exact" sorts before "renamed"
            .values(source=JSONObject(kind="kind", model="model__name", model_id="model_id"))[:1])
    candidates = candidates.annotate(source=Subquery(best, output_field=JSONField()))
    copies = []
    for (pk, owner_id, name, path, host, format, size, device, inode, verdict, content_id, precision_id, bf16_id,
         fp8_id, e5m2_id, folded_id, created_at, dtypes, layout, sha256, folder_digest, autov3,
         source) in candidates.order_by().values_list(*ROW_FIELDS, "source"):
        kind = source["kind"] if source else None
        copies.append(Copy(
            id=pk, owner_id=owner_id, name=name, path=path, host=host, format=format,
            precision=precision_of(dtypes), size=size or 0, sha256=sha256 or folder_digest or "",
            autov3=autov3 or "", content_id=content_id, precision_id=precision_id, bf16_id=bf16_id, fp8_id=fp8_id,
            e5m2_id=e5m2_id, folded_id=folded_id, layout=layout, device=device, inode=inode, verdict=verdict,
            verified=kind is not None, source_name=kind == Match.Kind.EXACT,
            created=created_at.timestamp() if created_at else 0.0,
            model=source["model"] if source else None, model_id=source["model_id"] if source else None,
        ))
    return copies
