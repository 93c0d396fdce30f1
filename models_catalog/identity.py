"""What each local file is, in words: the one answer every page, the API and the CLI show.

A file's identity is its strongest Match (exact/renamed > same weights >
converted > precision > partial > short hash) with the model, version, type
and base model it leads to; or, when there is none, why: still being read,
waiting for Civitai (and until when), could not be read, or unknown.

Read-only. Evidence goes through the one privacy rule (`selectors.evidence_shown_to`):
a match reached through another user's file never names that file.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from models_catalog.models import CivitaiLookup, FileHashes, LocalFile, Match

if TYPE_CHECKING:
    from models_catalog.updates import VersionUpdate

# The words for each kind of match: a badge, and a phrase that reads "<phrase> <model>".
MATCH_BADGES = {
    "exact": "exact copy", "renamed": "renamed copy", "same-weights": "same weights", "converted": "converted",
    "precision": "precision variant", "partial": "partial", "short-hash": "short hash only", "manual": "linked by you",
}
MATCH_PHRASES = {
    "exact": "exact copy of", "renamed": "renamed copy of", "same-weights": "same weights as",
    "converted": "converted copy of", "precision": "precision variant of", "partial": "shares components with",
    "short-hash": "only a short hash agrees with", "manual": "linked by you to",
}
# Kinds strong enough to say "this file IS that model"; partial and short-hash only relate it.
IDENTIFYING_KINDS = ("exact", "renamed", "same-weights", "converted", "precision")


class IdentityState:
    IDENTIFIED = "identified"  # a match of an identifying kind
    RELATED = "related"  # only a partial or short-hash match
    WORKING = "working"  # queued, hashing or reading tensors
    WAITING = "waiting"  # read, but a Civitai answer is still to come
    UNKNOWN = "unknown"  # read, every source asked (or offline): nobody knows it
    BROKEN = "broken"  # could not be hashed or read

    FINISHED = (IDENTIFIED, RELATED, UNKNOWN, BROKEN)
    # What a list can filter on (see state_q); WAITING files count as UNKNOWN there.
    FILTERS = {IDENTIFIED: "identified", RELATED: "related only (partial, short hash or linked by you)",
               UNKNOWN: "not identified", WORKING: "still being read", BROKEN: "broken (could not be read)"}


@dataclass(frozen=True)
class FileIdentity:
    state: str
    match_kind: str = ""
    model_id: int | None = None
    model_name: str = ""
    model_type: str = ""
    version_id: int | None = None
    version_name: str = ""
    base_model: str = ""
    source: str = ""  # civitai | huggingface
    source_file_name: str = ""
    trained_words: tuple[str, ...] = ()
    evidence: str = ""
    waiting_for: str = ""  # e.g. "Civitai rate-limited, retrying at 12:03:10"
    problem: str = ""  # why a broken file could not be read, or why a source could not be asked
    other_kinds: tuple[str, ...] = field(default_factory=tuple)
    # A newer Civitai version than any the owner holds (models_catalog.updates), or None.
    update: VersionUpdate | None = None
    # What an unknown file says about itself ("LoRA for SDXL: my_style_v3", LocalFile.described_as):
    # its name in lists until a source knows it.
    described_as: str = ""

    @property
    def is_finished(self) -> bool:
        return self.state in IdentityState.FINISHED

    @property
    def badge(self) -> str:
        if self.match_kind:
            return MATCH_BADGES.get(self.match_kind, self.match_kind)
        return {"working": "reading", "waiting": "asking Civitai", "broken": "unreadable"}.get(self.state, "unknown")

    @property
    def what(self) -> str:
        """'Hidden Base Model v1.0', or '' when nothing is known."""
        return " ".join(x for x in (self.model_name, self.version_name) if x)

    @property
    def summary(self) -> str:
        """One line: 'renamed copy of Hidden Base Model v1.0 (file hiddenBase_v10.safetensors)'."""
        if self.match_kind:
            tail = f" (file {self.source_file_name})" if self.source_file_name else ""
            return f"{MATCH_PHRASES.get(self.match_kind, self.match_kind)} {self.what}{tail}"
        if self.state == IdentityState.WORKING:
            return "still being read"
        if self.state == IdentityState.WAITING:
            return f"waiting for {self.waiting_for}" if self.waiting_for else "waiting for Civitai"
        if self.state == IdentityState.BROKEN:
            return f"broken: {self.problem}" if self.problem else "broken"
        named = f"unknown {self.described_as}" if self.described_as else "unknown"
        return named + (f" ({self.problem})" if self.problem else "")

    def to_json(self) -> dict:
        # Shallow: every field is a str, an int, None, a tuple of str (listed below) or `update` (its own
        # to_json). dataclasses.asdict deep-copied each value: ~1/5 of an API files page's Python.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(update=self.update.to_json() if self.update else None,
                    trained_words=list(self.trained_words), other_kinds=list(self.other_kinds),
                    badge=self.badge, summary=self.summary, is_finished=self.is_finished)
        return data


def best_match(matches: list[Match]) -> Match | None:
    """Strongest kind first; between equals, Civitai (it names versions people use) before the Hub, then oldest."""
    if not matches:
        return None
    return min(matches, key=lambda m: (Match.STRENGTH.get(m.kind, 9),
                                       m.source_file.version.model.source != "civitai", m.pk))


# What an identity never reads of the catalog rows it joins: Civitai's whole API answers (`raw`) and the
# descriptions, tens of KB a model for real models, fetched for every match of every listed file.
CATALOG_TEXT_DEFERRED = tuple(f"source_file__version__{path}" for path in (
    "raw", "description", "model__raw", "model__description", "model__newest_version__raw",
    "model__newest_version__description"))


def file_identities(files, *, viewer) -> dict[int, FileIdentity]:
    """The identity of each file in `files` (LocalFile rows the viewer may see), in a fixed number of queries."""
    from models_catalog.selectors import evidence_shown_to, shown_matches
    from models_catalog.updates import holds_newest

    files = list(files)
    ids = [f.pk for f in files]
    if not ids:
        return {}
    by_file: dict[int, list[Match]] = {}
    # The newest version rides along (a join, a semi-join): the update badge costs no query of its own.
    matches = (Match.objects.filter(shown_matches(viewer), local_file_id__in=ids)
               .select_related("source_file__version__model__newest_version").defer(*CATALOG_TEXT_DEFERRED)
               .annotate(holds_newest=holds_newest()))
    for m in matches:
        by_file.setdefault(m.local_file_id, []).append(m)
    unmatched_done = [f.pk for f in files if f.pk not in by_file and f.status == LocalFile.Status.DONE]
    civitai = civitai_states(unmatched_done)

    bests = {f.pk: best_match(by_file.get(f.pk, [])) for f in files}
    shown = evidence_shown_to([b for b in bests.values() if b is not None], user=viewer)
    out = {}
    for f in files:
        best = bests[f.pk]
        if best is not None:
            out[f.pk] = _identified(best, by_file[f.pk], evidence=shown[best.pk].text)
        elif f.status == LocalFile.Status.ERROR:
            out[f.pk] = FileIdentity(state=IdentityState.BROKEN, problem=f.error or "could not be hashed")
        elif f.status != LocalFile.Status.DONE:
            out[f.pk] = FileIdentity(state=IdentityState.WORKING)
        elif f.pk in civitai and civitai[f.pk][0] == "waiting":
            out[f.pk] = FileIdentity(state=IdentityState.WAITING, waiting_for=civitai[f.pk][1])
        elif f.safety_verdict == "unreadable":
            out[f.pk] = FileIdentity(state=IdentityState.BROKEN, problem=f.analysis_error or "the data could not be read")
        else:
            problem = civitai[f.pk][1] if f.pk in civitai else ""
            out[f.pk] = FileIdentity(state=IdentityState.UNKNOWN, problem=problem, described_as=f.described_as)
    return out


def best_model_names_sync(*, local_file_ids) -> int:
    """Store each file's best match model name in LocalFile.best_model_name (the model sort's indexed key).
    Call it wherever a file's Match rows are rewritten. Returns how many rows changed."""
    ids = list(local_file_ids)
    by_file: dict[int, list[Match]] = {}
    for m in Match.objects.filter(local_file_id__in=ids).select_related("source_file__version__model"):
        by_file.setdefault(m.local_file_id, []).append(m)
    changed = 0
    for pk in ids:  # one conditional UPDATE per file: the same queries whether or not the name changed
        best = best_match(by_file.get(pk, []))
        name = best.source_file.version.model.name[:500] if best else ""
        changed += LocalFile.objects.filter(pk=pk).exclude(best_model_name=name).update(best_model_name=name)
    return changed


# --- the same rules in SQL: lists filter and sort on them without loading every file -----------

UNFINISHED_STATUSES = (LocalFile.Status.QUEUED, LocalFile.Status.HASHING, LocalFile.Status.ANALYSING)


def _with_match(**where) -> Q:
    return Q(pk__in=Match.objects.filter(**where).values("local_file_id"))


def kind_q(kind: str) -> Q:
    """LocalFile rows whose best match is of `kind` (the badge a list shows); "none": no match at all.
    Semi-joins on Match, served by its local_file index whatever the library size."""
    if kind == "none":
        return ~_with_match()
    stronger = [k for k, strength in Match.STRENGTH.items() if strength < Match.STRENGTH.get(kind, 9)]
    q = _with_match(kind=kind)
    return q & ~_with_match(kind__in=stronger) if stronger else q


def state_q(state: str) -> Q:
    """LocalFile rows in `state`, decided in the order `file_identities` decides it. A file waiting for
    Civitai counts as UNKNOWN here: telling them apart needs every file's Civitai lookups."""
    unmatched = ~_with_match()
    unreadable = Q(status=LocalFile.Status.ERROR) | Q(status=LocalFile.Status.DONE, safety_verdict="unreadable")
    if state == IdentityState.IDENTIFIED:
        return _with_match(kind__in=IDENTIFYING_KINDS)
    if state == IdentityState.RELATED:
        return _with_match() & ~_with_match(kind__in=IDENTIFYING_KINDS)
    if state == IdentityState.WORKING:
        return unmatched & Q(status__in=UNFINISHED_STATUSES)
    if state == IdentityState.BROKEN:
        return unmatched & unreadable
    if state in (IdentityState.UNKNOWN, IdentityState.WAITING):
        return unmatched & Q(status=LocalFile.Status.DONE) & ~Q(safety_verdict="unreadable")
    raise ValueError(f"unknown identity state {state!r}")


def _identified(best: Match, matches: list[Match], *, evidence: str) -> FileIdentity:
    """`evidence` has been through the privacy rule: it never names another user's file."""
    from models_catalog.updates import update_for_match

    sf = best.source_file
    version, model = sf.version, sf.version.model
    kinds = sorted({m.kind for m in matches} - {best.kind}, key=lambda k: Match.STRENGTH.get(k, 9))
    state = IdentityState.IDENTIFIED if best.kind in IDENTIFYING_KINDS else IdentityState.RELATED
    words = version.trained_words if isinstance(version.trained_words, list) else []
    return FileIdentity(
        state=state, match_kind=best.kind, model_id=model.pk, model_name=model.name, model_type=model.type,
        version_id=version.pk, version_name=version.name if model.source == "civitai" else "",
        base_model=version.base_model, source=model.source, source_file_name=sf.name,
        trained_words=tuple(str(w) for w in words[:50]), evidence=evidence, other_kinds=tuple(kinds),
        update=update_for_match(best),
    )


def lookup_values(h: FileHashes) -> list[str]:
    """Every value a file may be asked of Civitai under (upper-case, as CivitaiLookup stores them)."""
    embedded = (h.embedded_model_hash or "")[:12]
    return [v.upper() for v in (h.sha256, h.autov3, h.blake3, embedded) if v]


def civitai_states(local_file_ids: list[int]) -> dict[int, tuple[str, str]]:
    """For finished files without a match: ('waiting', why) while a Civitai answer is still to come,
    ('error', why) when the last answer was a failure. Files with neither are left out."""
    if not local_file_ids or not settings.CIVITAI_ENABLED:
        return {}
    values_of: dict[int, list[str]] = {}
    for h in FileHashes.objects.filter(local_file_id__in=local_file_ids).only(
            "local_file_id", "sha256", "autov3", "blake3", "embedded_model_hash"):
        values_of[h.local_file_id] = lookup_values(h)
    wanted = {v for vs in values_of.values() for v in vs}
    if not wanted:
        return {}
    open_states = (CivitaiLookup.State.PENDING, CivitaiLookup.State.RUNNING, CivitaiLookup.State.ERROR)
    rows = {}
    for row in CivitaiLookup.objects.filter(Q(value__in=wanted) & Q(state__in=open_states)).exclude(
            kind=CivitaiLookup.Kind.ANY):
        rows[row.value] = row
    now = timezone.now()
    out = {}
    for pk, values in values_of.items():
        mine = [rows[v] for v in values if v in rows]
        waiting = [r for r in mine if r.state != CivitaiLookup.State.ERROR]
        if waiting:
            out[pk] = ("waiting", waiting_reason(waiting, now))
        elif mine:
            row = mine[0]
            why = row.last_error or "unknown error"
            if not why.startswith("Civitai could not be asked"):
                why = f"Civitai could not be asked: {why}"
            out[pk] = ("error", why + _retry_note(row))
    return out


def _retry_note(row: CivitaiLookup) -> str:
    from models_catalog.services.civitai_lookup import ERROR_RETRY_AFTER

    if row.checked_at is None:
        return ""
    # The hourly refresh asks failed lookups again once ERROR_RETRY_AFTER has passed.
    when = timezone.localtime(row.checked_at + ERROR_RETRY_AFTER).strftime("%H:%M")
    return f" — will retry after {when}"


def waiting_reason(rows: list[CivitaiLookup], now: datetime) -> str:
    """What a file waits for, in words a user can act on."""
    later = [r for r in rows if r.not_before and r.not_before > now]
    if later:
        first = min(r.not_before for r in later)
        why = next((r.last_error for r in later if r.last_error), "")
        local = timezone.localtime(first).strftime("%H:%M:%S")
        return f"Civitai (unavailable or rate-limited, retrying at {local})" + (f": {why}" if why else "")
    if any(r.state == CivitaiLookup.State.RUNNING for r in rows):
        return "Civitai (asking now)"
    return "Civitai (queued: asked together with the files still being hashed)"
