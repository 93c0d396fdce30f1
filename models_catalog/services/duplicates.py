"""Duplicates across names, containers and precisions, with a suggested copy to keep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from models_catalog.models import LocalFile, Match

# Safer and more portable containers first: safetensors never runs code.
FORMAT_RANK = {"safetensors": 0, "diffusers": 1, "gguf": 2, "torch-zip": 3, "torch-legacy": 4, "torch-tar": 5, "pickle": 6}
PRECISION_NAMES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}


def precision_of(lf: LocalFile) -> str:
    dtypes = (lf.fingerprint or {}).get("dtypes") if isinstance(lf.fingerprint, dict) else None
    floats = {k: v for k, v in (dtypes or {}).items() if k in PRECISION_NAMES}
    if not floats:
        return ""
    return PRECISION_NAMES[max(floats, key=floats.get)]


@dataclass
class Member:
    id: int
    name: str
    path: str
    format: str
    precision: str
    size: int
    match: str  # how it relates to the suggested keeper: keep | exact copy | converted | precision variant


@dataclass
class DuplicateGroup:
    members: list[Member]
    keep_id: int
    model: str | None
    model_id: int | None
    total_bytes: int
    reclaimable_bytes: int
    reason: str = ""
    evidence: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _relation(a: LocalFile, keeper: LocalFile, sha: dict[int, str]) -> str:
    if a.pk == keeper.pk:
        return "keep"
    if sha.get(a.pk) and sha.get(a.pk) == sha.get(keeper.pk):
        return "exact copy"
    if a.content_id and a.content_id == keeper.content_id:
        return "converted"
    return "precision variant"


def duplicate_groups(*, owner=None, prefer_precision: str = "fp16") -> list[DuplicateGroup]:
    """Groups of local files holding the same model. owner=None means everyone's (staff views)."""
    files = LocalFile.objects.filter(status=LocalFile.Status.DONE).select_related("hashes")
    files = files.filter(quarantined_at__isnull=True)  # hook (duplicate actions): quarantined files are in no group
    if owner is not None:
        files = files.filter(owner=owner)
    rows = list(files)
    sha = {}
    for lf in rows:
        try:
            sha[lf.pk] = lf.hashes.sha256 or lf.hashes.folder_digest
        except LocalFile.hashes.RelatedObjectDoesNotExist:
            sha[lf.pk] = ""
    uf = _UnionFind()
    first_by_key: dict[tuple[str, str], int] = {}
    for lf in rows:
        uf.find(lf.pk)
        for key in (("sha", sha[lf.pk]), ("content", lf.content_id), ("precision", lf.precision_id)):
            if not key[1]:
                continue
            if key in first_by_key:
                uf.union(lf.pk, first_by_key[key])
            else:
                first_by_key[key] = lf.pk
    grouped: dict[int, list[LocalFile]] = {}
    for lf in rows:
        grouped.setdefault(uf.find(lf.pk), []).append(lf)
    result = []
    for members in grouped.values():
        if len(members) < 2:
            continue
        result.append(_group(members, sha, prefer_precision))
    result.sort(key=lambda g: -g.reclaimable_bytes)
    return result


def _group(members: list[LocalFile], sha: dict[int, str], prefer_precision: str) -> DuplicateGroup:
    def keep_rank(lf: LocalFile):
        return (FORMAT_RANK.get(lf.format, 9), 0 if precision_of(lf) == prefer_precision else 1, len(lf.path), lf.pk)

    keeper = min(members, key=keep_rank)
    match = Match.objects.filter(local_file__in=members, kind__in=("exact", "renamed")).select_related(
        "source_file__version__model").first()
    total = sum(lf.size or 0 for lf in members)
    fmt = keeper.format or "unknown format"
    reason = f"{fmt}" + (f", {precision_of(keeper)}" if precision_of(keeper) else "") + (
        " (safetensors never runs code)" if keeper.format == "safetensors" else "")
    return DuplicateGroup(
        members=[Member(lf.pk, lf.name, lf.path, lf.format, precision_of(lf), lf.size or 0, _relation(lf, keeper, sha))
                 for lf in sorted(members, key=keep_rank)],
        keep_id=keeper.pk,
        model=match.source_file.version.model.name if match else None,
        model_id=match.source_file.version.model_id if match else None,
        total_bytes=total,
        reclaimable_bytes=total - (keeper.size or 0),
        reason=reason,
    )
