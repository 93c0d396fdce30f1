"""Match rows: how each local file relates to files the sources publish, with evidence.

Strongest first: exact/renamed (SHA256 or BLAKE3 equal), same-weights
(AutoV3 equal: tensor bytes identical, header edited), converted and
precision (tensor fingerprint equal to a local file that was identified
exactly), partial (shares components with such a file), short-hash (only
AutoV1/AutoV2/CRC32 agree: weak, said so).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from models_catalog.models import FileHashes, LocalFile, Match, SourceFile

EXACT_KINDS = (Match.Kind.EXACT, Match.Kind.RENAMED)
# A related fine-tune shares at least this much of its tensor bytes.
PARTIAL_MIN_SHARE = 0.05


@dataclass(frozen=True)
class Candidate:
    source_file: SourceFile
    kind: str
    evidence: str
    via: LocalFile | None = None
    share: float | None = None


def _hashes(lf: LocalFile) -> FileHashes | None:
    return FileHashes.objects.filter(local_file=lf).first()


def _exact(lf: LocalFile, h: FileHashes) -> list[Candidate]:
    found = []
    q = Q(pk__in=[])
    if h.sha256:
        q |= Q(sha256=h.sha256)
    if h.blake3:
        q |= Q(blake3=h.blake3)
    for sf in SourceFile.objects.filter(q).select_related("version__model"):
        which = "SHA256" if h.sha256 and sf.sha256 == h.sha256 else "BLAKE3"
        renamed = sf.name.lower() != lf.name.lower()
        evidence = f"{which} equal to {sf.name}" + (f" (here named {lf.name})" if renamed else "")
        found.append(Candidate(sf, Match.Kind.RENAMED if renamed else Match.Kind.EXACT, evidence))
    return found


def _same_weights(h: FileHashes) -> list[Candidate]:
    if not h.autov3:
        return []
    return [
        Candidate(sf, Match.Kind.SAME_WEIGHTS, f"AutoV3 {h.autov3.upper()} equal to {sf.name}: identical tensor data, "
                                                 "different header or metadata")
        for sf in SourceFile.objects.filter(autov3=h.autov3).exclude(sha256=h.sha256)
    ]


def _identified_sources(other: LocalFile) -> list[SourceFile]:
    return [m.source_file for m in Match.objects.filter(local_file=other, kind__in=EXACT_KINDS).select_related("source_file")]


def _via_fingerprint(lf: LocalFile) -> list[Candidate]:
    found: list[Candidate] = []
    if not lf.content_id:
        return found
    related = LocalFile.objects.filter(Q(content_id=lf.content_id) | Q(precision_id=lf.precision_id)).exclude(pk=lf.pk)
    for other in related.filter(matches__kind__in=EXACT_KINDS).distinct():
        shown, via = _through(lf, other)
        if other.content_id == lf.content_id:
            if other.format != lf.format:
                kind, why = Match.Kind.CONVERTED, f"same tensors as {shown} ({other.format}), here as {lf.format or 'another container'}"
            else:
                kind, why = Match.Kind.SAME_WEIGHTS, f"same tensors as {shown}, file bytes differ"
        else:
            kind, why = Match.Kind.PRECISION, f"same weights as {shown} after casting to fp16 (other precision)"
        for sf in _identified_sources(other):
            found.append(Candidate(sf, kind, f"{why}, which is {sf.name}", via=via))
    return found


def _through(lf: LocalFile, other: LocalFile) -> tuple[str, LocalFile | None]:
    """How evidence may name the file a match goes through: another user's file stays anonymous."""
    if other.owner_id == lf.owner_id:
        return other.name, other
    return "a copy another user holds", None


def _components(lf: LocalFile) -> dict[str, dict]:
    return ((lf.fingerprint or {}).get("components") or {}) if isinstance(lf.fingerprint, dict) else {}


def component_share(a: LocalFile, b: LocalFile) -> tuple[float, list[str]]:
    """Share of tensor bytes in common, judged per component (content or precision id equal)."""
    ca, cb = _components(a), _components(b)
    shared, shared_bytes = [], 0
    for name, comp in ca.items():
        other = cb.get(name)
        if other and (comp.get("precision_id") == other.get("precision_id") or comp.get("content_id") == other.get("content_id")):
            shared.append(name)
            shared_bytes += int(comp.get("nbytes") or 0)
    total = max(sum(int(c.get("nbytes") or 0) for c in ca.values()), sum(int(c.get("nbytes") or 0) for c in cb.values()), 1)
    return shared_bytes / total, shared


def _partial(lf: LocalFile, already: set[int]) -> list[Candidate]:
    if not _components(lf):
        return []
    found = []
    identified = LocalFile.objects.filter(matches__kind__in=EXACT_KINDS, fingerprint__isnull=False).exclude(pk=lf.pk).distinct()
    for other in identified:
        share, shared = component_share(lf, other)
        if not shared or share < PARTIAL_MIN_SHARE or share >= 0.999:
            continue
        shown, via = _through(lf, other)
        for sf in _identified_sources(other):
            if sf.pk not in already:
                found.append(Candidate(sf, Match.Kind.PARTIAL, f"shares {', '.join(shared)} with {shown} "
                                                                  f"({share:.0%} of tensor bytes), which is {sf.name}",
                                       via=via, share=share))
    return found


def _short(h: FileHashes) -> list[Candidate]:
    found = []
    for field, label in (("autov2", "AutoV2"), ("autov1", "AutoV1"), ("crc32", "CRC32")):
        value = getattr(h, field)
        if not value:
            continue
        for sf in SourceFile.objects.filter(**{field: value}).exclude(sha256=h.sha256):
            note = " (AutoV1 and CRC32 share a length; this is the CRC32)" if label == "CRC32" else ""
            found.append(Candidate(sf, Match.Kind.SHORT_HASH, f"only the {label} {value.upper()} agrees with {sf.name}{note}: weak evidence"))
    return found


def local_file_match(*, local_file_id: int) -> list[Match]:
    """Recompute the Match rows of one local file from the catalog. No network."""
    lf = LocalFile.objects.filter(pk=local_file_id).first()
    h = _hashes(lf) if lf else None
    if lf is None or h is None:
        return []
    candidates = _exact(lf, h)
    if not candidates:
        candidates = _same_weights(h) + _via_fingerprint(lf)
        candidates += _partial(lf, {c.source_file.pk for c in candidates})
        if not candidates:
            candidates = _short(h)
    best: dict[tuple[int, str], Candidate] = {}
    for c in candidates:
        best.setdefault((c.source_file.pk, c.kind), c)
    with transaction.atomic():
        Match.objects.filter(local_file=lf).delete()
        return Match.objects.bulk_create(
            Match(local_file=lf, source_file=c.source_file, kind=c.kind, evidence=c.evidence[:2000], via=c.via, share=c.share)
            for c in best.values()
        )


def local_files_rematch(*, local_file_ids: set[int]) -> None:
    """Rematch files, then every file that reaches a source through another one
    (converted, precision, partial) — including files of this same batch whose
    sibling only got its exact match after they were first matched."""
    for pk in sorted(local_file_ids):
        local_file_match(local_file_id=pk)
    keys = list(LocalFile.objects.filter(pk__in=local_file_ids).exclude(content_id="").values_list("content_id", "precision_id"))
    q = Q(pk__in=local_file_ids)
    for content_id, precision_id in keys:
        q |= Q(content_id=content_id) | Q(precision_id=precision_id)
    exact = Match.objects.filter(kind__in=EXACT_KINDS).values("local_file_id")
    for pk in LocalFile.objects.filter(q).exclude(pk__in=exact).values_list("pk", flat=True):
        local_file_match(local_file_id=pk)
