"""Hash lookup: any hash kind, prefixed forms or a pasted A1111 infotext -> what it is.

Local catalog first (source files, then the asking user's own files), Civitai
only for what is still unknown, and never twice within the cache time.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from models_catalog.models import CivitaiLookup, FileHashes, FolderMember, SourceFile
from models_catalog.services.catalog_store import civitai_version_store
from models_catalog.services.civitai_lookup import civitai_clients, civitai_site, is_fresh
from workers import kinds
from workers.hash_parse import HashQuery
from workers.hash_query import parse_hash_query
from workers.sources.civitai_data import CivitaiError

# Query kind -> (field on HashFields, how many leading chars of the value to compare)
# A kind Civitai does not keep (AutoV3_full) is compared through the kind that is its prefix (AutoV3).
_SHORT_FORM = {k.prefix_of: k for k in kinds.DERIVED if not kinds.BY_NAME[k.prefix_of].civitai}
KIND_FIELDS = {k.name: ((_SHORT_FORM[k.name].field, _SHORT_FORM[k.name].length) if k.name in _SHORT_FORM
                        else (k.field, k.length)) for k in kinds.REGISTRY}
KIND_MEANING = {k.name: k.meaning for k in kinds.REGISTRY}


# What agreeing on one hash kind says about a source file, in Match kinds (see matching.py).
HASH_KIND_MATCH = {k.name: str(k.strength) for k in kinds.REGISTRY}


@dataclass
class LookupMatch:
    source: str  # "civitai" | "huggingface" | "my files"
    model: str | None
    version: str | None
    file: str
    # How the entry relates to a model: exact, renamed, same-weights, converted, precision, partial,
    # short-hash; for one of my files, what that file is ("unknown" when nothing knows it).
    match: str
    evidence: str
    hash_kind: str = ""  # the hash kind that agreed with the query
    url: str | None = None
    model_id: int | None = None
    local_file_id: int | None = None
    summary: str = ""  # my files: "renamed copy of Hidden Base Model v1.0 (file hiddenBase_v10.safetensors)"
    owner: str = ""  # my files seen by staff: whose file it is ('' for the viewer's own)


@dataclass
class LookupResult:
    query: str
    label: str | None
    kinds_tried: tuple[str, ...]
    note: str | None
    matches: list[LookupMatch] = field(default_factory=list)
    # off | known here | cached hit | cached miss | hit | miss | error: ...
    civitai: str = "off"

    def to_json(self) -> dict:
        return asdict(self)


def hash_fields_q(candidates, model_has_full: bool) -> Q:
    """Q over a HashFields table (FileHashes, FolderMember, SourceFile) for "any candidate agrees".
    `model_has_full`: the table keeps the whole AutoV3 (local rows), so a 64-hex AutoV3 compares in full."""
    q = Q(pk__in=[])
    for c in candidates:
        if c.kind == "AutoV3_full" and model_has_full:
            # autov3 is always autov3_full[:12]: comparing it too lets its index find the row.
            q |= Q(autov3=c.value[:12], autov3_full=c.value)
        else:
            name, n = KIND_FIELDS[c.kind]
            q |= Q(**{name: c.value[:n]})
    return q


def _which(row, candidates) -> str:
    for c in candidates:
        name, n = KIND_FIELDS[c.kind]
        if getattr(row, name, "") == c.value[:n]:
            return c.kind
    return candidates[0].kind


def _source_matches(query: HashQuery) -> list[LookupMatch]:
    found = []
    for sf in SourceFile.objects.filter(hash_fields_q(query.candidates, False)).select_related("version__model")[:50]:
        kind = _which(sf, query.candidates)
        model = sf.version.model
        found.append(LookupMatch(
            source=model.source, model=model.name, version=sf.version.name or sf.version.external_id, file=sf.name,
            match=HASH_KIND_MATCH[kind], hash_kind=kind, evidence=f"{kind} equal: {KIND_MEANING[kind]}",
            url=sf.version.url or model.url, model_id=model.pk,
        ))
    return found


def _my_matches(query: HashQuery, user) -> list[LookupMatch]:
    """The viewer's own copies, each tied to what it is (the identity the pages show)."""
    if user is None:
        return []
    from models_catalog.identity import file_identities
    from models_catalog.selectors import local_files_visible_to, owner_label

    visible = local_files_visible_to(user=user)
    hits = []  # (local file, shown name, hash kind)
    for h in FileHashes.objects.filter(hash_fields_q(query.candidates, True), local_file__in=visible).select_related("local_file__owner")[:50]:
        hits.append((h.local_file, h.local_file.name, _which(h, query.candidates)))
    for m in FolderMember.objects.filter(hash_fields_q(query.candidates, True), folder__in=visible).select_related("folder__owner")[:50]:
        hits.append((m.folder, f"{m.folder.name}/{m.relative_path}", _which(m, query.candidates)))
    identities = file_identities({lf.pk: lf for lf, _, _ in hits}.values(), viewer=user)
    found = []
    for lf, shown, kind in hits:
        identity = identities[lf.pk]
        found.append(LookupMatch(
            source="my files", model=identity.model_name or None, version=identity.version_name or None, file=shown,
            match=identity.match_kind or identity.state, hash_kind=kind, evidence=f"{kind} equal: {KIND_MEANING[kind]}",
            model_id=identity.model_id, local_file_id=lf.pk, summary=identity.summary, owner=owner_label(lf, user=user),
        ))
    return found


def _ask_civitai(query: HashQuery, client) -> str:
    """One GET per distinct value: Civitai matches any stored kind. Returns what happened."""
    # A kind by-hash does not match is sent as its longest prefix that it does (kinds.by_hash_form);
    # every kind has one (tests/workers/test_kinds.py).
    first = query.candidates[0]
    value = first.value[: kinds.by_hash_form(first.kind).length]
    row, _ = CivitaiLookup.objects.get_or_create(kind=CivitaiLookup.Kind.ANY, value=value.upper())
    if is_fresh(row, timezone.now()):
        return f"cached {row.state}"
    started = time.monotonic()
    version, site = None, ""
    try:
        # Each CIVITAI_API_BASES site in turn, the next only after a miss (civitai.red holds what .com hides).
        for index, each in enumerate([client] if client else civitai_clients()):
            version, site = each.version_by_hash(value), civitai_site(each.base_url, index=index)
            if version is not None:
                break
    except CivitaiError as exc:
        CivitaiLookup.objects.filter(pk=row.pk).update(state=CivitaiLookup.State.ERROR, last_error=str(exc))
        return f"error: {exc}"
    stored = civitai_version_store(version=version, site=site) if version else None
    CivitaiLookup.objects.filter(pk=row.pk).update(
        state=CivitaiLookup.State.HIT if version else CivitaiLookup.State.MISS, version=stored,
        checked_at=timezone.now(), duration_ms=int((time.monotonic() - started) * 1000), last_error="",
    )
    return "hit" if version else "miss"


def hash_lookup(*, text: str, user=None, ask_civitai: bool | None = None, client=None) -> list[LookupResult]:
    """Raises workers.hash_parse.HashQueryError for text that holds no hash."""
    if ask_civitai is None:
        ask_civitai = settings.CIVITAI_ENABLED
    results = []
    for query in parse_hash_query(text):
        result = LookupResult(query=query.text, label=query.label, kinds_tried=query.kinds_tried, note=query.note)
        result.matches = _source_matches(query)
        if result.matches:
            result.civitai = "known here"
        elif ask_civitai:
            result.civitai = _ask_civitai(query, client)
            result.matches = _source_matches(query)
        result.matches += _my_matches(query, user)
        results.append(result)
    return results
