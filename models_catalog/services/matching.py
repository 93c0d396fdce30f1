"""Match rows: how each local file relates to files the sources publish, with evidence.

Strongest first: exact/renamed (SHA256 or BLAKE3 equal), same-weights
(AutoV3 equal: tensor bytes identical, header edited), converted (same tensor
fingerprint in another container or under another naming: a kohya LoRA's PEFT copy) and
precision (tensor fingerprint equal to a local file that was identified
exactly), partial (shares components with such a file), short-hash (only
AutoV1/AutoV2/CRC32 agree: weak, said so).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery, Sum

from models_catalog.identity import best_model_names_sync
from workers import kinds
from models_catalog.models import FileHashes, LocalComponent, LocalFile, Match, SourceFile
from workers.modelfiles.architecture import other_layouts
from workers.modelfiles.lora_forms import ALPHA_COMPONENT as LORA_ALPHAS

EXACT_KINDS = (Match.Kind.EXACT, Match.Kind.RENAMED)
# A related fine-tune shares at least this much of its tensor bytes.
PARTIAL_MIN_SHARE = 0.05
LORA_MATRICES = "lora"  # a LoRA's matrices (component_for_key); its alphas other than the rank: LORA_ALPHAS
# A fingerprint may come from a remote push: bound what one file can write.
MAX_COMPONENTS = 64
_ID_MAX = 64


@dataclass(frozen=True)
class Candidate:
    source_file: SourceFile
    kind: str
    evidence: str
    via: LocalFile | None = None
    share: float | None = None


def _by_full_hash(lf: LocalFile, h: FileHashes) -> list[Candidate]:
    """Exact/renamed (SHA256 or BLAKE3 equal), else same-weights (AutoV3 equal): one query for both."""
    q = Q(pk__in=[])
    if h.sha256:
        q |= Q(sha256=h.sha256)
    if h.blake3:
        q |= Q(blake3=h.blake3)
    if h.autov3:
        q |= Q(autov3=h.autov3)
    exact, same = [], []
    for sf in SourceFile.objects.filter(q).select_related("version__model").order_by("pk"):
        if (h.sha256 and sf.sha256 == h.sha256) or (h.blake3 and sf.blake3 == h.blake3):
            which = "SHA256" if h.sha256 and sf.sha256 == h.sha256 else "BLAKE3"
            renamed = sf.name.lower() != lf.name.lower()
            evidence = f"{which} equal to {sf.name}" + (f" (here named {lf.name})" if renamed else "")
            exact.append(Candidate(sf, Match.Kind.RENAMED if renamed else Match.Kind.EXACT, evidence))
        elif not (h.sha256 and sf.sha256 == h.sha256):
            same.append(Candidate(sf, Match.Kind.SAME_WEIGHTS, f"AutoV3 {h.autov3.upper()} equal to {sf.name}: "
                                                                 "identical tensor data, different header or metadata"))
    return exact or same


def _identified_sources(other: LocalFile) -> list[SourceFile]:
    return [m.source_file for m in Match.objects.filter(local_file=other, kind__in=EXACT_KINDS).select_related("source_file")]


def _via_fingerprint(lf: LocalFile) -> list[Candidate]:
    found: list[Candidate] = []
    if not lf.content_id:
        return found
    same = Q(content_id=lf.content_id) | Q(precision_id=lf.precision_id)
    if lf.bf16_id:
        same |= Q(bf16_id=lf.bf16_id)
    if lf.fp8_id:
        same |= Q(fp8_id=lf.fp8_id)
    if lf.e5m2_id:
        same |= Q(e5m2_id=lf.e5m2_id)
    # A kohya Flux LoRA and diffusers' conversion of it, whose weights hold the alphas (lora_folding.py).
    same |= Q(folded_id=lf.content_id)
    if lf.folded_id:
        same |= Q(content_id=lf.folded_id)
    related = LocalFile.objects.filter(same).exclude(pk=lf.pk)
    for other in related.filter(matches__kind__in=EXACT_KINDS).distinct():
        shown, via = _through(lf, other)
        if other.folded_id == lf.content_id and other.content_id != lf.content_id:
            kind, why = Match.Kind.CONVERTED, (
                f"the same LoRA as {shown}, converted by diffusers' kohya Flux converter (its alphas folded into the weights)")
        elif lf.folded_id and other.content_id == lf.folded_id:
            kind, why = Match.Kind.CONVERTED, (
                f"the kohya original of {shown}, which diffusers converted with the alphas folded into the weights")
        elif other.content_id == lf.content_id:
            layouts = other_layouts(other.architecture_kind, lf.architecture_kind)
            if other.format != lf.format:
                kind, why = Match.Kind.CONVERTED, f"same tensors as {shown} ({other.format}), here as {lf.format or 'another container'}"
            elif layouts:  # same container, other tensor names: renamed by a converter (kohya -> PEFT, ...)
                kind, why = Match.Kind.CONVERTED, f"same tensors as {shown} ({layouts[0]}), here as {layouts[1]}"
            else:
                kind, why = Match.Kind.SAME_WEIGHTS, f"same tensors as {shown}, file bytes differ"
        else:
            cast = _shared_cast(lf, other)
            kind, why = Match.Kind.PRECISION, f"same weights as {shown} after casting to {cast} (other precision)"
        for sf in _identified_sources(other):
            found.append(Candidate(sf, kind, f"{why}, which is {sf.name}", via=via))
    return found


def _shared_cast(lf: LocalFile, other: LocalFile) -> str:
    """The highest precision two variants agree at (the lossless casts first)."""
    if other.precision_id == lf.precision_id:
        return "fp16"
    if lf.bf16_id and other.bf16_id == lf.bf16_id:
        return "bf16"
    if lf.fp8_id and other.fp8_id == lf.fp8_id:
        return "fp8 e4m3fn"
    return "fp8 e5m2"


def _through(lf: LocalFile, other: LocalFile) -> tuple[str, LocalFile | None]:
    """How evidence may name the file a match goes through: another user's file stays anonymous."""
    if other.owner_id == lf.owner_id:
        return other.name, other
    return "a copy another user holds", None


@dataclass(frozen=True)
class ComponentRow:
    name: str
    content_id: str
    precision_id: str
    nbytes: int


def fingerprint_components(fingerprint) -> list[ComponentRow]:
    """The components of a stored fingerprint JSON, in its order. Pushed JSON is
    untrusted: an entry without a name, string ids or a byte count is left out."""
    comps = fingerprint.get("components") if isinstance(fingerprint, dict) else None
    if not isinstance(comps, dict):
        return []
    rows = []
    for name, comp in list(comps.items())[:MAX_COMPONENTS]:
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not isinstance(comp, dict):
            continue
        content_id, precision_id, nbytes = comp.get("content_id"), comp.get("precision_id"), comp.get("nbytes", 0)
        if not all(isinstance(v, str) and 0 < len(v) <= _ID_MAX for v in (content_id, precision_id)):
            continue
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < 2**62:
            continue
        rows.append(ComponentRow(name, content_id, precision_id, nbytes))
    return rows


def local_components_sync(*, local_file_id: int, fingerprint) -> int:
    """Replace the LocalComponent rows of a file with those of `fingerprint`.
    Call it wherever a fingerprint is stored, in the same transaction."""
    rows = fingerprint_components(fingerprint)
    with transaction.atomic(savepoint=False):  # part of the caller's transaction when there is one
        LocalComponent.objects.filter(local_file_id=local_file_id).delete()
        LocalComponent.objects.bulk_create(
            LocalComponent(local_file_id=local_file_id, name=r.name, content_id=r.content_id,
                           precision_id=r.precision_id, nbytes=r.nbytes)
            for r in rows
        )
    return len(rows)


def _share(mine: list[ComponentRow], shared_names: set[str], their_total: int) -> tuple[float, list[str]]:
    """Bytes of my shared components over the larger of the two files' tensor bytes."""
    shared = [c.name for c in mine if c.name in shared_names]
    shared_bytes = sum(c.nbytes for c in mine if c.name in shared_names)
    return shared_bytes / max(sum(c.nbytes for c in mine), their_total, 1), shared


def _partial(lf: LocalFile, already: set[int]) -> list[Candidate]:
    """Files identified exactly that share a component with `lf`, found through the
    component indexes: the work grows with the files that share, not with all files.
    Its own components are those its fingerprint holds (the rows local_components_sync wrote)."""
    mine = fingerprint_components(lf.fingerprint)
    if not mine:
        return []
    same = Q(pk__in=[])
    for c in mine:
        same |= Q(name=c.name, precision_id=c.precision_id) | Q(name=c.name, content_id=c.content_id)
    identified = Match.objects.filter(local_file_id=OuterRef("local_file_id"), kind__in=EXACT_KINDS)
    their_total = (LocalComponent.objects.filter(local_file_id=OuterRef("local_file_id"))
                   .values("local_file_id").annotate(total=Sum("nbytes")).values("total"))
    rows = (LocalComponent.objects.filter(same).exclude(local_file_id=lf.pk).filter(Exists(identified))
            .annotate(their_total=Subquery(their_total)).values_list("local_file_id", "name", "their_total"))
    names: dict[int, set[str]] = {}
    totals: dict[int, int] = {}
    for file_id, name, total in rows:
        names.setdefault(file_id, set()).add(name)
        totals[file_id] = int(total or 0)
    shares = {}
    for file_id, shared_names in names.items():
        share, shared = _share(mine, shared_names, totals[file_id])
        # Equal "lora" matrices, nothing else of mine unshared but alphas, ids unequal: only the alphas
        # differ (lora_forms.py), a few bytes, so the share is ~1; the scale differs: related, not the same.
        alphas_only = (LORA_MATRICES in shared and share >= 0.999
                       and {c.name for c in mine} - set(shared) <= {LORA_ALPHAS})
        if shared and (PARTIAL_MIN_SHARE <= share < 0.999 or alphas_only):
            shares[file_id] = (share, shared, alphas_only)
    if not shares:
        return []
    sources: dict[int, list[SourceFile]] = {}
    for m in Match.objects.filter(local_file_id__in=list(shares), kind__in=EXACT_KINDS).select_related("source_file").order_by("pk"):
        sources.setdefault(m.local_file_id, []).append(m.source_file)
    found = []
    for other in LocalFile.objects.filter(pk__in=list(shares)).only("id", "owner_id", "name"):
        share, shared, alphas_only = shares[other.pk]
        shown, via = _through(lf, other)
        for sf in sources.get(other.pk, []):
            if sf.pk not in already:
                what = (f"the same LoRA matrices as {shown} with other alphas (alpha != rank in one of them, "
                        f"lost or changed in the other)" if alphas_only else
                        f"shares {', '.join(shared)} with {shown} ({share:.0%} of tensor bytes)")
                found.append(Candidate(sf, Match.Kind.PARTIAL, f"{what}, which is {sf.name}", via=via, share=share))
    return found


# Longest (strongest) first; sorted() is stable, so AutoV1 stays before CRC32.
SHORT_KINDS = tuple((k.field, k.name) for k in sorted(
    (k for k in kinds.REGISTRY if k.strength is kinds.Strength.SHORT_HASH), key=lambda k: -k.length))


def _short(h: FileHashes) -> list[Candidate]:
    wanted = [(field, label, getattr(h, field)) for field, label in SHORT_KINDS if getattr(h, field)]
    if not wanted:
        return []
    q = Q(pk__in=[])
    for field, _, value in wanted:
        q |= Q(**{field: value})
    rows = list(SourceFile.objects.filter(q).exclude(sha256=h.sha256).order_by("pk"))
    found = []
    for field, label, value in wanted:  # strongest short kind first, as before
        note = " (AutoV1 and CRC32 share a length; this is the CRC32)" if label == "CRC32" else ""
        found += [Candidate(sf, Match.Kind.SHORT_HASH, f"only the {label} {value.upper()} agrees with {sf.name}{note}: "
                                                       "weak evidence") for sf in rows if getattr(sf, field) == value]
    return found


def local_file_match(*, local_file_id: int) -> list[Match]:
    """Recompute the Match rows of one local file from the catalog. No network."""
    lf = LocalFile.objects.select_related("hashes").filter(pk=local_file_id).first()
    return local_file_match_loaded(local_file=lf) if lf is not None else []


def local_file_match_loaded(*, local_file: LocalFile) -> list[Match]:
    """local_file_match for a row already loaded with select_related("hashes")."""
    lf = local_file
    h = lf.stored_hashes
    if h is None:
        return []
    candidates = _by_full_hash(lf, h)
    if not any(c.kind in EXACT_KINDS for c in candidates):
        candidates += _via_fingerprint(lf)
        candidates += _partial(lf, {c.source_file.pk for c in candidates})
        if not candidates:
            candidates = _short(h)
    best: dict[tuple[int, str], Candidate] = {}
    for c in candidates:
        best.setdefault((c.source_file.pk, c.kind), c)
    # No savepoint: the callers' transaction (analysis, identify, a Civitai answer) is the unit.
    with transaction.atomic(savepoint=False):
        # A link the owner made by hand (kind manual) is their statement, not ours to redo: it stays.
        Match.objects.filter(local_file=lf).exclude(kind=Match.Kind.MANUAL).delete()
        if not best:  # nothing to name: skip reading the matches back
            LocalFile.objects.filter(pk=lf.pk).exclude(best_model_name="").exclude(
                pk__in=Match.objects.filter(kind=Match.Kind.MANUAL).values("local_file_id")).update(best_model_name="")
            return []
        created = Match.objects.bulk_create(Match.fill_copies([
            Match(local_file=lf, source_file=c.source_file, kind=c.kind, evidence=c.evidence[:2000], via=c.via,
                  share=c.share, owner_id=lf.owner_id)
            for c in best.values()
        ]))
        best_model_names_sync(local_file_ids=[lf.pk])  # My files' model sort key, with the matches
        return created


def local_files_rematch(*, local_file_ids: set[int]) -> None:
    """Rematch files, then every file that reaches a source through another one
    (converted, precision, partial) — including files of this same batch whose
    sibling only got its exact match after they were first matched."""
    for pk in sorted(local_file_ids):
        local_file_match(local_file_id=pk)
    relatives_rematch(local_file_ids=local_file_ids)


def relatives_rematch(*, local_file_ids: set[int]) -> None:
    """Rematch the files without an exact match that share a fingerprint with these
    (they may now reach a source through them). Files without a fingerprint cost one query."""
    keys = list(LocalFile.objects.filter(pk__in=local_file_ids).exclude(content_id="")
                .values_list("content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id"))
    if not keys:
        return
    q = Q(pk__in=[])
    for content_id, precision_id, bf16_id, fp8_id, e5m2_id, folded_id in keys:
        q |= Q(content_id=content_id) | Q(precision_id=precision_id) | Q(folded_id=content_id)
        if folded_id:
            q |= Q(content_id=folded_id)
        if bf16_id:
            q |= Q(bf16_id=bf16_id)
        if fp8_id:
            q |= Q(fp8_id=fp8_id)
        if e5m2_id:
            q |= Q(e5m2_id=e5m2_id)
    exact = Match.objects.filter(kind__in=EXACT_KINDS).values("local_file_id")
    for pk in LocalFile.objects.filter(q).exclude(pk__in=exact).values_list("pk", flat=True):
        local_file_match(local_file_id=pk)
