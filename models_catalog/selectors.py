"""Read-only queries behind the web pages: what a viewer may see, and in what order.

Privacy rule: local files (paths, names, uploads) belong to their owner; staff
may see them too, labelled with the owner. The catalog of source models is shared.
Anything built from local files here is filtered by `local_files_visible_to(user=...)`,
or by owner where a list means "my files" (see `local_files_listed_for`).
"""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from models_catalog.identity import FileIdentity, IdentityState, file_identities, kind_q, state_q
from models_catalog.models import (
    FileHashes, FolderMember, Job, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion,
)
from models_catalog.duplicate_relations import precision_of
from models_catalog.services.lookup import hash_fields_q
from workers import kinds
from workers.hash_parse import HashQuery, HashQueryError
from workers.hash_query import parse_hash_query

# Worst first wins: a model's badge shows the worst verdict among the viewer's copies.
VERDICT_RANK = {"safe": 0, "suspicious": 1, "unreadable": 2, "dangerous": 3}
VERDICTS = tuple(VERDICT_RANK)
LOCAL_FORMATS = ("safetensors", "diffusers", "gguf", "torch-zip", "torch-legacy", "torch-tar", "pickle", "unknown")
# Civitai's model types plus what Hugging Face repos are stored as.
COMMON_TYPES = ("Checkpoint", "LORA", "LoCon", "DoRA", "TextualInversion", "Hypernetwork", "VAE", "Controlnet",
                "Upscaler", "MotionModule", "Repository", "Dataset")
PAGE_SIZE = 50
SORTS = {"name": "name A→Z", "newest": "recently added"}
HASH_FIELDS = tuple(k.field for k in kinds.CIVITAI_KINDS)
HASH_LABELS = {k.field: k.civitai for k in kinds.CIVITAI_KINDS}


def local_files_visible_to(*, user) -> QuerySet[LocalFile]:
    """THE rule for which local files `user` may see (pages, API, CLI, exports): their own; staff
    everyone's, each shown with its owner (pages: an "owner" badge; API: `owner`).

    Seeing is not changing: actions that change files or what is said about them (hard link,
    quarantine, restore, purge, convert, manual link, sidecar export, upload de-duplication) filter by
    `owner=user` themselves, staff included. Forgetting a row (page and API) is the one action that
    takes this rule, so staff may forget anyone's row (it never touches a registered file on disk);
    that is the long-standing answer, kept."""
    if user is None or not user.is_authenticated:
        return LocalFile.objects.none()
    if user.is_staff:
        return LocalFile.objects.all()
    return LocalFile.objects.filter(owner=user)


def local_files_listed_for(*, user, scope: str = "mine") -> QuerySet[LocalFile]:
    """What a list of local files shows by default: "mine" is the viewer's own files, staff too (an
    admin's My files would drown in everyone's); "all" is every file `local_files_visible_to` allows."""
    files = local_files_visible_to(user=user)
    return files if scope == "all" else files.filter(owner=user)


def owner_label(local_file: LocalFile, *, user) -> str:
    """Who owns a file the viewer sees, when it is not the viewer (staff views): '' for their own."""
    return "" if local_file.owner_id == user.pk else local_file.owner.get_username()


def shown_matches(user) -> Q:
    """THE rule for which Match rows may be shown to `user` about the files they see: a hand-made
    (manual) link is its owner's own statement, so even staff see it only on their own files."""
    return ~Q(kind=Match.Kind.MANUAL) | Q(local_file__owner_id=user.pk)


def visible_jobs(user) -> QuerySet[Job]:
    return Job.objects.filter(owner=user)


def hashing_rate(lf: LocalFile, now=None) -> float | None:
    """Bytes per second of the current stage (hashing, or reading tensors), from when it started."""
    done = lf.stage_bytes_done
    if lf.status not in (LocalFile.Status.HASHING, LocalFile.Status.ANALYSING) or not lf.stage_started_at or not done:
        return None
    seconds = ((now or timezone.now()) - lf.stage_started_at).total_seconds()
    if seconds <= 0:
        return None
    return done / seconds


def with_rates(files: list[LocalFile]) -> list[LocalFile]:
    now = timezone.now()
    for f in files:
        f.rate = hashing_rate(f, now)
    return files


# --- catalog ----------------------------------------------------------------


@dataclass
class CatalogQuery:
    user: object
    scope: str = "mine"  # mine: models my files match; all: every known model
    text: str = ""
    model_ids: set[int] | None = None  # a hash search's answer (None: not a hash search)
    type: str = ""
    base_model: str = ""
    source: str = ""
    format: str = ""
    safety: str = ""
    kind: str = ""
    sort: str = "name"
    after: str = ""


@dataclass
class CatalogRow:
    model: SourceModel
    base_models: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the model's own source, then sources reached via my copies
    formats: list[str] = field(default_factory=list)  # "safetensors fp16", ...
    copies: int = 0
    safety: str = ""
    match_kinds: list[str] = field(default_factory=list)


@dataclass
class CatalogPage:
    rows: list[CatalogRow]
    next_cursor: str | None
    is_first: bool


def encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> list | None:
    """The last row's sort key, or None for a cursor that is not one (then: first page)."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        return None
    if sort == "name" and isinstance(values, list) and len(values) == 2 \
            and isinstance(values[0], str) and isinstance(values[1], int):
        return values
    if sort == "newest" and isinstance(values, list) and len(values) == 1 and isinstance(values[0], int):
        return values
    return None


def _my_match_filter(q: CatalogQuery) -> Q | None:
    """Conditions on the viewer's matches, or None when the catalog is not limited to them."""
    cond = {}
    if q.format:
        cond["local_file__format"] = q.format
    if q.safety:
        cond["local_file__safety_verdict"] = q.safety
    if q.kind:
        cond["kind"] = q.kind
    if q.scope == "all" and not cond:
        return None
    return Q(owner=q.user, **cond)


def catalog_text_parts(text: str) -> list[QuerySet]:
    """Model ids whose name or a version's trigger words contain `text`, as parts of a UNION: PostgreSQL
    cannot use the trigram indexes (migration 0007) under `name OR pk IN (...)` and walks the whole
    name index instead. The API's search adds its hash parts to these."""
    return [SourceModel.objects.filter(name__icontains=text).order_by().values("pk"),
            SourceVersion.objects.filter(trained_words__icontains=text).order_by().values("model_id")]


def catalog_queryset(q: CatalogQuery) -> QuerySet[SourceModel]:
    models = SourceModel.objects.all()
    mine = _my_match_filter(q)
    if mine is not None:
        # A semi-join driven by the viewer's matches: small even when the catalog is huge.
        models = models.filter(pk__in=Match.objects.filter(mine).values("model_id"))
    if q.model_ids is not None:
        models = models.filter(pk__in=list(q.model_ids))
    elif q.text:
        names, words = catalog_text_parts(q.text)
        models = models.filter(pk__in=names.union(words))
    if q.type:
        models = models.filter(type=q.type)
    if q.source:
        models = models.filter(source=q.source)
    if q.base_model:
        models = models.filter(pk__in=SourceVersion.objects.filter(base_model=q.base_model).values("model_id"))
    return models


def catalog_page(q: CatalogQuery, *, page_size: int = PAGE_SIZE) -> CatalogPage:
    """One page in keyset order (name, id) or (-id): no OFFSET, no COUNT over the catalog."""
    models = catalog_queryset(q)
    last = decode_cursor(q.after, q.sort)
    if q.sort == "newest":
        if last:
            models = models.filter(pk__lt=last[0])
        models = models.order_by("-id")
    else:
        if last:
            # `name >= last` bounds the index range; the OR only breaks ties inside it.
            models = models.filter(name__gte=last[0]).filter(Q(name__gt=last[0]) | Q(pk__gt=last[1]))
        models = models.order_by("name", "id")
    found = list(models.only("id", "name", "type", "source", "nsfw", "url")[: page_size + 1])
    more = len(found) > page_size
    found = found[:page_size]
    next_cursor = None
    if more and found:
        tail = found[-1]
        next_cursor = encode_cursor([tail.pk] if q.sort == "newest" else [tail.name, tail.pk])
    return CatalogPage(rows=_rows_for(found, q.user), next_cursor=next_cursor, is_first=last is None)


def _rows_for(models: list[SourceModel], user) -> list[CatalogRow]:
    """Per-page facts (base models, my copies, formats, safety): a few queries over <= one page of models."""
    rows = {m.pk: CatalogRow(model=m, sources=[m.source]) for m in models}
    if not rows:
        return []
    for model_id, base in (SourceVersion.objects.filter(model_id__in=rows).exclude(base_model="")
                           .values_list("model_id", "base_model").distinct()):
        if base not in rows[model_id].base_models:
            rows[model_id].base_models.append(base)
    matches = (Match.objects.filter(source_file__version__model_id__in=rows, local_file__owner=user)
               .values_list("source_file__version__model_id", "kind", "local_file_id"))
    files_by_model: dict[int, set[int]] = {}
    for model_id, kind, lf_id in matches:
        files_by_model.setdefault(model_id, set()).add(lf_id)
        if kind not in rows[model_id].match_kinds:
            rows[model_id].match_kinds.append(kind)
    all_ids = set().union(*files_by_model.values()) if files_by_model else set()
    files = {lf.pk: lf for lf in LocalFile.objects.filter(pk__in=all_ids).only("id", "format", "safety_verdict", "fingerprint")}
    # Other sources that know the same bytes (a Civitai model that is also a Hub repo).
    also = (Match.objects.filter(local_file_id__in=all_ids)
            .values_list("local_file_id", "source_file__version__model__source").distinct())
    sources_of_file: dict[int, set[str]] = {}
    for lf_id, source in also:
        sources_of_file.setdefault(lf_id, set()).add(source)
    for model_id, ids in files_by_model.items():
        row = rows[model_id]
        row.copies = len(ids)
        worst = -1
        for lf_id in sorted(ids):
            lf = files[lf_id]
            dtypes = lf.fingerprint.get("dtypes") if isinstance(lf.fingerprint, dict) else None
            label = " ".join(p for p in (lf.format, precision_of(dtypes)) if p)
            if label and label not in row.formats:
                row.formats.append(label)
            if VERDICT_RANK.get(lf.safety_verdict, -1) > worst:
                worst, row.safety = VERDICT_RANK[lf.safety_verdict], lf.safety_verdict
            for source in sorted(sources_of_file.get(lf_id, ())):
                if source not in row.sources:
                    row.sources.append(source)
        row.match_kinds.sort(key=lambda k: Match.STRENGTH.get(k, 9))
    return [rows[m.pk] for m in models]


def my_catalog_choices(user) -> dict[str, list[str]]:
    """Filter choices from the viewer's own identified models plus the common ones, reused per user for
    FILTER_CHOICES_SECONDS by every web process (the shared cache: ~35 ms of a catalog page for a user of
    10,000 files, which each process paid for each user it served when the reuse was per process)."""
    return _reused(("catalog", user.pk), lambda: _my_catalog_choices(user), shared=True)


def _my_catalog_choices(user) -> dict[str, list[str]]:
    # Match's own copies of the owner and the model: an index-only range of (owner, model), with no join
    # through LocalFile, SourceFile and SourceVersion (60 -> 35 ms at 10,000 files).
    model_ids = Match.objects.filter(owner=user).values("model_id")
    types = set(SourceModel.objects.filter(pk__in=model_ids).exclude(type="").order_by()
                .values_list("type", flat=True).distinct()[:200])
    # order_by(): the default ordering's columns would make DISTINCT return one row per version
    bases = set(SourceVersion.objects.filter(model_id__in=model_ids).exclude(base_model="").order_by()
                .values_list("base_model", flat=True).distinct()[:200])
    return {"types": sorted(types | set(COMMON_TYPES), key=str.lower), "base_models": sorted(bases, key=str.lower)}


def models_of_local_files(local_file_ids, user) -> set[int]:
    """Models the viewer's (visible) files match, for a hash search that found local files."""
    visible = local_files_visible_to(user=user).filter(pk__in=list(local_file_ids))
    return set(Match.objects.filter(local_file__in=visible).values_list("source_file__version__model_id", flat=True))


# --- one model ----------------------------------------------------------------


@dataclass
class LocalCopy:
    match: Match
    file: LocalFile
    evidence: str
    via: LocalFile | None  # only when the viewer may see it


@dataclass
class FileView:
    file: SourceFile
    hashes: list[tuple[str, str]]  # (label, Civitai-form value)
    copies: list[LocalCopy]


@dataclass
class VersionView:
    version: SourceVersion
    files: list[FileView]


@dataclass(frozen=True)
class ShownEvidence:
    text: str
    via_id: int | None  # the file the match goes through, only when the viewer may see it


def evidence_shown_to(matches, *, user) -> dict[int, ShownEvidence]:
    """THE evidence privacy rule (pages, API, CLI, exports), for each match by pk, in at most one query.

    A converted / precision / partial match may go through another identified copy (`via`), and its
    stored evidence names that copy. When the viewer may not see that copy (the visibility rule), the
    whole text is replaced, not just the name edited out (a path, a folder or a renamed copy's old
    name could still give it away); what is left says the kind of match and the published file."""
    matches = list(matches)
    via_ids = {m.via_id for m in matches if m.via_id}
    visible = (set(local_files_visible_to(user=user).filter(pk__in=via_ids).values_list("pk", flat=True))
               if via_ids else set())
    shown = {}
    for m in matches:
        if m.via_id is None or m.via_id in visible:
            shown[m.pk] = ShownEvidence(m.evidence, m.via_id)
        else:
            shown[m.pk] = ShownEvidence(f"{m.get_kind_display()}: established through another user's copy of these "
                                        f"weights (details hidden), which is {m.source_file.name}", None)
    return shown


def model_detail(model: SourceModel, user) -> list[VersionView]:
    versions = list(model.versions.all())
    files = list(SourceFile.objects.filter(version__model=model).order_by("-primary", "name", "id"))
    visible = local_files_visible_to(user=user)
    matches = list(Match.objects.filter(shown_matches(user), source_file__in=files, local_file__in=visible)
                   .select_related("local_file__owner", "source_file", "via").order_by("local_file__name", "id"))
    shown = evidence_shown_to(matches, user=user)
    copies: dict[int, list[LocalCopy]] = {}
    for m in matches:
        copies.setdefault(m.source_file_id, []).append(LocalCopy(
            match=m, file=m.local_file, evidence=shown[m.pk].text, via=m.via if shown[m.pk].via_id else None))
    by_version: dict[int, list[FileView]] = {}
    for sf in files:
        hashes = [(HASH_LABELS[f], getattr(sf, f).upper()) for f in HASH_FIELDS if getattr(sf, f)]
        if sf.git_sha1:
            hashes.append(("git SHA-1", sf.git_sha1))
        by_version.setdefault(sf.version_id, []).append(FileView(file=sf, hashes=hashes, copies=copies.get(sf.pk, [])))
    return [VersionView(version=v, files=by_version.get(v.pk, [])) for v in versions]


def file_matches(lf: LocalFile, user) -> list[tuple[Match, str, LocalFile | None]]:
    """A local file's matches with evidence safe to show to `user`."""
    matches = list(Match.objects.filter(shown_matches(user), local_file=lf).select_related("source_file__version__model", "via"))
    matches.sort(key=lambda m: (Match.STRENGTH.get(m.kind, 9), m.pk))
    shown = evidence_shown_to(matches, user=user)
    return [(m, shown[m.pk].text, m.via if shown[m.pk].via_id else None) for m in matches]


def source_choices() -> list[tuple[str, str]]:
    return list(Source.choices)


def civitai_lookups_for(hashes) -> list:
    """The Civitai lookups asked for a file's hashes: what happened and when (shown on the file page)."""
    from models_catalog.models import CivitaiLookup

    if hashes is None:
        return []
    values = [v.upper() for v in (hashes.sha256, hashes.autov3, hashes.blake3, (hashes.embedded_model_hash or "")[:12]) if v]
    return list(CivitaiLookup.objects.filter(value__in=values).order_by("created_at"))


# --- My files -------------------------------------------------------------------
# One query object for the page and GET /api/v1/files/: the same filters, sorts and cursors.

FILE_SORTS = {"newest": "recently added", "name": "name A→Z", "size": "largest first", "model": "model A→Z"}
FILE_SCOPES = {"mine": "my files", "all": "every file I may see"}
FILE_STATES = IdentityState.FILTERS
FILE_MATCH_KINDS = list(Match.Kind.choices) + [("none", "not identified")]


@dataclass
class FileQuery:
    user: object
    # "mine": the viewer's own files, also for staff (My files is a list of one's own disks; an
    # admin's page would drown in everyone's). "all": every file `local_files_visible_to` lets them see.
    scope: str = "mine"
    search: str = ""  # name, path, model name, or any hash in any form
    type: str = ""  # model type of a match (Checkpoint, LORA, ...)
    base_model: str = ""
    safety: str = ""
    match: str = ""  # best match kind, or "none"
    state: str = ""  # identified | related | unknown | working | broken
    folder: str = ""  # a path prefix: files in that folder or below
    status: str = ""
    origin: str = ""
    format: str = ""
    family: str = ""  # architecture family from the tensors (SD 1.x, SDXL, Flux, ...): LocalFile.architecture_family
    kind: str = ""  # architecture kind (checkpoint, lora_kohya, t5xxl, ...): LocalFile.architecture_kind
    updates: str = ""  # "newer": only files whose Civitai model has a newer version (models_catalog.updates)
    sort: str = "newest"
    cursor: str = ""


@dataclass
class FileRow:
    file: LocalFile
    identity: FileIdentity

    @property
    def folder(self) -> str:
        return self.file.path.rsplit("/", 1)[0] if "/" in self.file.path else ""


@dataclass
class FilePage:
    rows: list[FileRow]
    next_cursor: str | None
    is_first: bool
    hash_queries: list[HashQuery] = field(default_factory=list)  # what a hash search was read as

    @property
    def pending(self) -> bool:
        """Something on the page will still change by itself (being read, or waiting for Civitai)."""
        return any(not r.identity.is_finished for r in self.rows)


@dataclass(frozen=True)
class _Phase:
    """One stretch of a sort order: rows matching `where`, ordered by (`key`, id) or by id alone.
    A sort on a value some rows lack (size, model) lists the rows without it after the others."""

    key: str | None
    descending: bool
    where: Callable[[], Q] = Q  # built per query: a Q may hold a subquery


_FILE_SORT_PHASES = {
    "newest": (_Phase(None, True),),
    "name": (_Phase("name", False),),
    "size": (_Phase("size", True, lambda: Q(size__isnull=False)), _Phase(None, True, lambda: Q(size__isnull=True))),
    # Identified files by their best match's model name (stored on the row, see LocalFile.best_model_name),
    # then the files nothing matches, by their own name.
    "model": (_Phase("best_model_name", False, lambda: ~Q(best_model_name="")),
              _Phase("name", False, lambda: Q(best_model_name=""))),
}
_KEY_TYPES = {"name": str, "best_model_name": str, "size": int}


def hash_search(text: str) -> list[HashQuery]:
    """The hashes in a search box's text (any kind, prefixed, or an infotext); [] when it holds none."""
    try:
        return parse_hash_query(text)
    except HashQueryError:
        return []


def _model_name_arm(files: QuerySet[LocalFile], text: str, *, viewer, own_only: bool) -> QuerySet:
    """Ids of `files` with a match (shown to the viewer) whose model's name contains `text`.

    Of these files' matches only: a common word names thousands of catalog models, whose matches over
    everyone's files the viewer's library would otherwise be cut from. The viewer's own files are the
    (owner, model) index range of Match's copied columns, every match shown to them; other scopes go
    through the listed files."""
    if own_only:
        mine = Match.objects.filter(owner=viewer)
    else:
        mine = Match.objects.filter(shown_matches(viewer), local_file__in=files.order_by().values("pk"))
    return mine.filter(model__name__icontains=text).order_by().values("local_file_id")


def _file_search_ids(files: QuerySet[LocalFile], text: str, queries: list[HashQuery], *, viewer,
                     own_only: bool = False) -> QuerySet:
    """Ids of files whose name, path, self-description words or matched model name contains `text`, or whose hashes (or a
    folder member's) are one of `queries`: a UNION of index-served sets, not one OR (see catalog_queryset)."""
    candidates = [c for query in queries for c in query.candidates]
    parts = []
    # A whole hash (64 hex, or any prefixed form) is no one's file or model name: only the hash
    # indexes are asked, and the search stays an index lookup whatever the library size.
    if not candidates or not all(len(q.candidates[0].value) == 64 or ":" in q.text for q in queries):
        parts += [files.filter(Q(name__icontains=text) | Q(path__icontains=text)).order_by().values("pk"),
                  # What the file says about itself (title, output name, top tags): its own
                  # trigram index (migration 0014), so a part of its own in the UNION.
                  files.filter(described_words__icontains=text).order_by().values("pk"),
                  _model_name_arm(files, text, viewer=viewer, own_only=own_only)]
    if candidates:
        parts.append(FileHashes.objects.filter(hash_fields_q(candidates, True)).order_by().values("local_file_id"))
        parts.append(FolderMember.objects.filter(hash_fields_q(candidates, True)).order_by().values("folder_id"))
        digests = [c.value for c in candidates if c.kind == "BLAKE3"]  # InvokeAI's folder hash is a BLAKE3
        if digests:
            parts.append(FileHashes.objects.filter(folder_digest__in=digests).order_by().values("local_file_id"))
    return parts[0].union(*parts[1:])


def _in_folder(prefix: str) -> Q:
    """Paths that start with `prefix` (which ends in "/"), in a form each database finds by index."""
    if connection.vendor == "sqlite":
        # SQLite compares text bytewise: everything under "a/b/" lies in ["a/b/", "a/b0") ("0" follows "/"),
        # an (owner, path) index range. Its LIKE would also ignore case.
        return Q(path__gte=prefix, path__lt=prefix[:-1] + "0")
    # Elsewhere collations need not be bytewise, so no range: the case-insensitive form is what the
    # trigram index on UPPER(path) serves (migration 0008), the case-sensitive one keeps the meaning.
    return Q(path__istartswith=prefix, path__startswith=prefix)


def file_list_queryset(q: FileQuery, *, hash_queries: list[HashQuery] | None = None) -> QuerySet[LocalFile]:
    """The viewer's files matching every filter of `q`, unordered."""
    files = local_files_listed_for(user=q.user, scope=q.scope)
    text = q.search.strip()
    if text:
        queries = hash_search(text) if hash_queries is None else hash_queries
        files = files.filter(pk__in=_file_search_ids(files, text, queries, viewer=q.user, own_only=q.scope != "all"))
    if q.type:
        files = files.filter(pk__in=Match.objects.filter(shown_matches(q.user), source_file__version__model__type__iexact=q.type)
                             .values("local_file_id"))
    if q.base_model:
        files = files.filter(pk__in=Match.objects.filter(shown_matches(q.user), source_file__version__base_model__iexact=q.base_model)
                             .values("local_file_id"))
    if q.safety:
        files = files.filter(safety_verdict=q.safety)
    if q.match:
        files = files.filter(kind_q(q.match))
        if q.match == Match.Kind.MANUAL:  # another user's hand links are theirs alone, staff included
            files = files.filter(owner=q.user)
    if q.state:
        files = files.filter(state_q(q.state))
    if q.folder.strip().rstrip("/"):
        files = files.filter(_in_folder(q.folder.strip().rstrip("/") + "/"))
    if q.updates:
        from models_catalog.updates import update_q

        files = files.filter(update_q())
    for name in ("status", "origin", "format"):
        if getattr(q, name):
            files = files.filter(**{name: getattr(q, name)})
    for name in ("family", "kind"):
        if getattr(q, name):
            files = files.filter(**{f"architecture_{name}": getattr(q, name)})
    return files


def decode_file_cursor(cursor: str, sort: str) -> list | None:
    """[phase, key value, id] of the last row shown, or None (first page) for anything else."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        return None
    phases = _FILE_SORT_PHASES.get(sort, ())
    if not (isinstance(values, list) and len(values) == 3 and type(values[0]) is int and type(values[2]) is int):
        return None
    if not 0 <= values[0] < len(phases):
        return None
    key = phases[values[0]].key
    if (key is None and values[1] is not None) or (key is not None and type(values[1]) is not _KEY_TYPES[key]):
        return None
    return values


def _after(phase: _Phase, value, pk: int) -> Q:
    """Rows after (value, pk) in the phase's order. `key >= value` bounds the index range; the OR only
    breaks ties inside it."""
    later_pk = Q(pk__lt=pk) if phase.descending else Q(pk__gt=pk)
    if phase.key is None:
        return later_pk
    bound, strict = ("lte", "lt") if phase.descending else ("gte", "gt")
    return Q(**{f"{phase.key}__{bound}": value}) & (Q(**{f"{phase.key}__{strict}": value}) | later_pk)


_choices_cache: dict[tuple, tuple[float, dict]] = {}  # key -> (computed at, choices), per process
MAX_CACHED_CHOICES = 1000  # users' catalog choices kept at once (oldest dropped)


def _reused(key: tuple, compute: Callable[[], dict], *, shared: bool = False) -> dict:
    """Filter suggestions computed at most once per FILTER_CHOICES_SECONDS per process (0: every time);
    `shared`: also kept that long in the default cache, so that every process reuses what one computed
    (suggestions of one user: each process would otherwise compute them for every user it serves).
    Suggestions only: a new type or base model shows up within that time."""
    ttl = settings.FILTER_CHOICES_SECONDS
    hit = _choices_cache.get(key)
    if ttl > 0 and hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    value = _shared_choices(key, compute, ttl) if shared and ttl > 0 else compute()
    if len(_choices_cache) >= MAX_CACHED_CHOICES:
        _choices_cache.pop(min(_choices_cache, key=lambda k: _choices_cache[k][0]), None)
    _choices_cache[key] = (time.monotonic(), value)
    return value


def _shared_choices(key: tuple, compute: Callable[[], dict], ttl: float) -> dict:
    name = "modelxref:choices:" + ":".join(map(str, key))
    try:
        value = cache.get(name)
    except Exception:  # the cache is an optimisation: Redis down means compute, not fail
        value = None
    if value is None:
        value = compute()
        try:
            cache.set(name, value, ttl)
        except Exception:
            pass
    return value


def file_filter_choices() -> dict[str, list[str]]:
    """Type and base-model suggestions for the My files filters, from the catalog's own indexed columns:
    what the viewer's matches hold would cost a pass over their whole library on every page view.
    The same for everyone, so reused (`_reused`): the DISTINCT over every catalog version was ~25 ms
    of a 60 ms My files page at 200,000 versions (docs/BENCHMARKS.md)."""
    return _reused(("files",), _file_filter_choices)


def _file_filter_choices() -> dict[str, list[str]]:
    types = set(SourceModel.objects.exclude(type="").order_by().values_list("type", flat=True).distinct()[:200])
    bases = set(SourceVersion.objects.exclude(base_model="").order_by().values_list("base_model", flat=True)
                .distinct()[:200])
    return {"types": sorted(types | set(COMMON_TYPES), key=str.lower), "base_models": sorted(bases, key=str.lower)}


# What a row of My files (page or API) never reads: the JSON a file's analysis left, KBs a row for real
# files (the fingerprint's components, a LoRA's capped training metadata), decoded for 50 rows a page.
FILE_ROW_DEFERRED = ("fingerprint", "safety_findings", "self_description", "architecture")


def file_list_page(q: FileQuery, *, page_size: int = PAGE_SIZE) -> FilePage:
    """One page of `q` in keyset order: no OFFSET and no COUNT, so page 2,000 costs what page 1 does.
    A fixed number of queries whatever the page size: the rows (one more where a size or model sort
    reaches the files without a size or a match), then the identities of those rows."""
    sort = q.sort if q.sort in _FILE_SORT_PHASES else "newest"
    queries = hash_search(q.search.strip()) if q.search.strip() else []
    files = file_list_queryset(q, hash_queries=queries).select_related("hashes", "owner").defer(*FILE_ROW_DEFERRED)
    phases = _FILE_SORT_PHASES[sort]
    last = decode_file_cursor(q.cursor, sort)
    found: list[tuple[int, LocalFile]] = []
    for index in range(last[0] if last else 0, len(phases)):
        phase = phases[index]
        rows = files.filter(phase.where())
        if last and index == last[0]:
            rows = rows.filter(_after(phase, last[1], last[2]))
        order = ["id"] if phase.key is None else [phase.key, "id"]
        rows = rows.order_by(*(f"-{o}" if phase.descending else o for o in order))
        found += [(index, f) for f in rows[: page_size + 1 - len(found)]]
        if len(found) > page_size:
            break
    next_cursor = None
    if len(found) > page_size:
        index, tail = found[page_size - 1]
        key = phases[index].key
        next_cursor = encode_cursor([index, getattr(tail, key) if key else None, tail.pk])
    shown = [f for _, f in found[:page_size]]
    identities = file_identities(shown, viewer=q.user)
    return FilePage(rows=[FileRow(file=f, identity=identities[f.pk]) for f in shown], next_cursor=next_cursor,
                    is_first=last is None, hash_queries=queries)

