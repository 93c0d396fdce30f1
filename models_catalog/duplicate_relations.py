"""How the copies of one model relate to each other, and which one to keep. Pure: no Django.

A duplicate group (files sharing bytes, tensor content or weights at another
precision) is read as a tree, so every member can say what it is *to the
group*, not only to the keeper:

    group            same weights at some precision (precision_id)
      cluster        same tensor content (content_id): the same weights, any container
        copy set     same bytes (SHA256 / folder digest)
          member     one file; a hard link of another member is "same file"

The relations a member gets:
    keep               the suggested keeper
    same file          a hard link (same device and inode) of a member listed before it: 0 bytes to reclaim
    exact copy         the same bytes as a member listed before it
    same weights       the same tensors in the same container, other header or metadata (AutoV3 / content_id)
    converted          the same tensors in another container (.ckpt, diffusers, ...) or under other names
                       (a kohya LoRA and its PEFT copy: another architecture kind), or a kohya Flux LoRA's
                       diffusers conversion, which holds its alphas folded into the weights (folded_id)
    precision variant  the same weights cast to another precision

Deleting an exact copy, a same-weights or a converted copy loses nothing while
the keeper stays ("lossless"); deleting a precision variant drops those bits
("lossy"), and deleting the only full-precision copy cannot be undone by
casting back, so the default keeper is always a highest-precision copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.modelfiles.architecture import other_layouts

# fp16 and bf16 trade range for mantissa: neither holds the other, so they rank equal.
PRECISION_RANK = {"fp64": 0, "fp32": 1, "bf16": 2, "fp16": 2, "fp8": 3}
UNKNOWN_PRECISION_RANK = 4
# Safer and more portable containers first: safetensors never runs code.
CONTAINER_RANK = {"safetensors": 0, "diffusers": 1, "gguf": 2, "torch-zip": 3, "torch-legacy": 4, "torch-tar": 5,
                  "pickle": 6}
VERDICT_RANK = {"safe": 0, "": 1, "suspicious": 2, "unreadable": 2, "dangerous": 3}
PREFERENCES = ("lossless", "fp32", "bf16", "fp16", "fp8")  # fp8: the lossiest

LOSSLESS_RELATIONS = ("exact copy", "same weights", "converted")
PRECISION_NAMES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}


def precision_of(dtypes) -> str:
    """The dominant floating dtype of a fingerprint's `dtypes` (dtype -> tensor count); '' when unread."""
    floats = {k: v for k, v in dtypes.items() if k in PRECISION_NAMES} if isinstance(dtypes, dict) else {}
    return PRECISION_NAMES[max(floats, key=floats.get)] if floats else ""


@dataclass
class Copy:
    """One candidate file as the grouping reads it (from the database, or pushed)."""

    id: int
    owner_id: int
    name: str
    path: str
    format: str
    precision: str
    size: int
    sha256: str = ""  # or the diffusers folder digest
    autov3: str = ""
    content_id: str = ""
    precision_id: str = ""
    bf16_id: str = ""
    fp8_id: str = ""
    layout: str = ""  # architecture kind (lora_kohya, lora_peft, checkpoint, ...): equal tensors under other names
    e5m2_id: str = ""
    folded_id: str = ""  # a kohya Flux LoRA's: the content_id of diffusers' conversion of it (alphas folded in)
    host: str = ""
    device: int | None = None
    inode: int | None = None
    verdict: str = ""
    verified: bool = False  # byte-identical to a file Civitai / Hugging Face hosts
    source_name: bool = False  # ... and under the source's own file name
    created: float = 0.0
    model: str | None = None
    model_id: int | None = None


@dataclass
class Member:
    id: int
    name: str
    path: str
    format: str
    precision: str
    size: int
    match: str  # relation to the group: keep | same file | exact copy | same weights | converted | precision variant
    evidence: str = ""
    copy_set: int = 0  # members with the same number hold the same bytes
    reclaim: str = ""  # keep | lossless | lossy | none (a hard link frees nothing)


@dataclass
class DuplicateGroup:
    members: list[Member]
    keep_id: int
    model: str | None
    model_id: int | None
    total_bytes: int
    reclaimable_bytes: int  # lossless + lossy
    lossless_bytes: int = 0
    lossy_bytes: int = 0
    reason: str = ""
    warning: str = ""
    evidence: list[str] = field(default_factory=list)
    keeper_copies: int = 0  # exact copies of the keeper that are not yet hard links of it (what the actions take)

    def to_json(self) -> dict:
        """asdict(self), built shallow: every field but the lists is a plain value (asdict's deep copy of a
        page of 50 groups was 9 ms of a cached API duplicates request, a third of it)."""
        return {**vars(self), "members": [dict(vars(m)) for m in self.members], "evidence": list(self.evidence)}


def keep_rank(c: Copy, prefer: str = "lossless") -> tuple:
    """Sort key: the first copy is the suggested keeper."""
    wanted = 0 if prefer == "lossless" or c.precision == prefer else 1
    return (wanted, PRECISION_RANK.get(c.precision, UNKNOWN_PRECISION_RANK), CONTAINER_RANK.get(c.format, 9),
            VERDICT_RANK.get(c.verdict, 2), 0 if c.verified else 1, 0 if c.source_name else 1, c.created, c.id)


def group_keys(c: Copy) -> list[tuple[str, str]]:
    """What makes two of one owner's copies the same model."""
    keys = [("sha", c.sha256), ("v3", c.autov3), ("content", c.content_id), ("precision", c.precision_id),
            ("bf16", c.bf16_id), ("fp8", c.fp8_id), ("e5m2", c.e5m2_id), ("content", c.folded_id)]
    return [(kind, f"{c.owner_id}:{value}") for kind, value in keys if value]


def duplicate_groups_of(copies: list[Copy], *, prefer: str = "lossless") -> list[DuplicateGroup]:
    """Group copies (union over shared keys, per owner) and explain each group; lossless savings first."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple[str, str], int] = {}
    for c in copies:
        find(c.id)
        for key in group_keys(c):
            if key in first:
                parent[find(c.id)] = find(first[key])
            else:
                first[key] = c.id
    grouped: dict[int, list[Copy]] = {}
    for c in copies:
        grouped.setdefault(find(c.id), []).append(c)
    groups = [explain_group(members, prefer=prefer) for members in grouped.values() if len(members) > 1]
    groups.sort(key=lambda g: (-g.lossless_bytes, -g.lossy_bytes, g.keep_id))
    return groups


def _cluster_key(c: Copy, folded_into: dict[str, str]) -> str:
    """Same tensor content, or the diffusers conversion of a kohya Flux LoRA (`folded_into`: folded_id ->
    the kohya file's content_id), which holds the same LoRA with its alphas folded into the weights."""
    if c.content_id:
        return folded_into.get(c.content_id, c.content_id)
    return (c.autov3 and f"v3:{c.autov3}") or (c.sha256 and f"sha:{c.sha256}") or f"id:{c.id}"


def _bytes_key(c: Copy) -> str:
    return c.sha256 or f"id:{c.id}"


def explain_group(copies: list[Copy], *, prefer: str = "lossless") -> DuplicateGroup:
    ranked = sorted(copies, key=lambda c: keep_rank(c, prefer))
    keeper = ranked[0]
    clusters: dict[str, list[Copy]] = {}
    folded_into = {c.folded_id: c.content_id for c in copies if c.folded_id and c.content_id}
    for c in ranked:  # dicts keep insertion order: the keeper's cluster first, then by rank
        clusters.setdefault(_cluster_key(c, folded_into), []).append(c)
    members: list[Member] = []
    copy_sets: dict[str, int] = {}
    for cluster in clusters.values():
        cluster_head = cluster[0]
        sets: dict[str, list[Copy]] = {}
        for c in cluster:
            sets.setdefault(_bytes_key(c), []).append(c)
        for same_bytes in sets.values():
            set_number = copy_sets.setdefault(_bytes_key(same_bytes[0]), len(copy_sets) + 1)
            for i, c in enumerate(same_bytes):
                match, evidence = _relation(c, keeper=keeper, cluster_head=cluster_head, earlier=same_bytes[:i])
                members.append(Member(c.id, c.name, c.path, c.format, c.precision, c.size, match, evidence,
                                      set_number, _reclaim(match)))
    keeper_set = members[0].copy_set  # the keeper is listed first
    lossless = sum(m.size for m in members if m.reclaim == "lossless")
    lossy = sum(m.size for m in members if m.reclaim == "lossy")
    model = next((c for c in ranked if c.model), None)
    return DuplicateGroup(
        members=members, keep_id=keeper.id, model=model.model if model else None,
        model_id=model.model_id if model else None, total_bytes=sum(c.size for c in copies),
        reclaimable_bytes=lossless + lossy, lossless_bytes=lossless, lossy_bytes=lossy,
        reason=_reason(keeper, ranked, prefer), warning=_warning(keeper, ranked),
        evidence=[f"{m.name}: {m.evidence}" for m in members if m.evidence],
        keeper_copies=sum(1 for m in members if m.copy_set == keeper_set and m.match == "exact copy"),
    )


def _relation(c: Copy, *, keeper: Copy, cluster_head: Copy, earlier: list[Copy]) -> tuple[str, str]:
    if c.id == keeper.id:
        return "keep", ""
    if earlier:
        link = next((e for e in earlier if _same_inode(c, e)), None)
        if link is not None:
            return "same file", f"a hard link of {link.name} (same device and inode): deleting it frees nothing"
        return "exact copy", f"the same bytes as {earlier[0].name} (SHA256 equal)"
    if c is not cluster_head and c.content_id and c.content_id != cluster_head.content_id:  # one is folded
        if c.folded_id and c.folded_id == cluster_head.content_id:
            return "converted", f"the kohya original of {cluster_head.name}, which diffusers converted with the " \
                                "alphas folded into the weights"
        return "converted", f"the same LoRA as {cluster_head.name}, converted by diffusers' kohya Flux converter " \
                            "(its alphas folded into the weights)"
    if c is not cluster_head:
        how = "AutoV3 equal" if c.autov3 and c.autov3 == cluster_head.autov3 else "tensor content equal"
        layouts = other_layouts(cluster_head.layout, c.layout)
        if c.format == cluster_head.format and layouts:  # other tensor names: renamed by a converter
            return "converted", f"the same tensors as {cluster_head.name} under other names ({layouts[1]} vs " \
                                f"{layouts[0]}; {how})"
        if c.format == cluster_head.format:
            return "same weights", f"the same tensors as {cluster_head.name}, other header or metadata ({how})"
        return "converted", f"the same tensors as {cluster_head.name} in another container ({c.format or '?'} vs " \
                            f"{cluster_head.format or '?'}; {how})"
    mine, theirs = c.precision or "another precision", keeper.precision or "the keeper's precision"
    if _higher(c, keeper):
        return "precision variant", f"the same weights in {mine}, more precise than the keeper ({theirs}): " \
                                    f"they cannot be recovered from {theirs}"
    return "precision variant", f"the same weights as {keeper.name} cast to {mine} (keeper: {theirs})"


def _same_inode(a: Copy, b: Copy) -> bool:
    return a.inode is not None and a.host == b.host and (a.device, a.inode) == (b.device, b.inode)


def _reclaim(match: str) -> str:
    if match == "keep":
        return "keep"
    if match == "same file":
        return "none"
    return "lossless" if match in LOSSLESS_RELATIONS else "lossy"


def _higher(a: Copy, b: Copy) -> bool:
    return PRECISION_RANK.get(a.precision, UNKNOWN_PRECISION_RANK) < PRECISION_RANK.get(b.precision, UNKNOWN_PRECISION_RANK)


def _reason(keeper: Copy, ranked: list[Copy], prefer: str) -> str:
    why = []
    if prefer != "lossless" and keeper.precision == prefer:
        why.append(f"{prefer} as asked")
    elif keeper.precision and any(c.precision and c.precision != keeper.precision for c in ranked):
        why.append(f"highest precision ({keeper.precision})")
    elif keeper.precision:
        why.append(keeper.precision)
    why.append(keeper.format + (" (never runs code)" if keeper.format == "safetensors" else "") if keeper.format
               else "unknown format")
    if keeper.verified:
        why.append("the same bytes as the source's file" + (", under its name" if keeper.source_name else ""))
    return ", ".join(why)


def _warning(keeper: Copy, ranked: list[Copy]) -> str:
    finer = [c for c in ranked if _higher(c, keeper)]
    if not finer:
        return ""
    best = min(finer, key=lambda c: PRECISION_RANK.get(c.precision, UNKNOWN_PRECISION_RANK))
    return (f"keeping {keeper.precision or 'this copy'} discards the full-precision weights ({best.precision}); "
            f"they cannot be recovered from {keeper.precision or 'it'}")
