"""The hash kinds this project knows, written down once (PURE: no Django).

Every other list of kinds (Civitai's spellings, model fields, lengths, what a
match proves, query prefixes, what Civitai's by-hash endpoint accepts) is
derived from REGISTRY. Adding a kind is a line here plus, when it is stored,
a migration for its HashFields column (docs/ARCHITECTURE.md, "How to add a
hash kind"). Definitions: /work/shared/reference/hashes.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

HEX = re.compile(r"[0-9a-fA-F]+")


class Strength(StrEnum):
    """What agreeing on a kind proves; the values are Match kinds (models.Match.Kind)."""

    EXACT = "exact"  # the whole file is identical
    SAME_WEIGHTS = "same-weights"  # the tensor bytes are identical, the header may differ
    SHORT_HASH = "short-hash"  # a short or weak hash agrees: evidence, not proof


@dataclass(frozen=True)
class HashKind:
    name: str  # our spelling, used in queries and evidence ("AutoV3_full")
    civitai: str | None  # the key in Civitai's files[].hashes; None: Civitai keeps no such value
    field: str  # the HashFields column (and the engine record's attribute)
    length: int  # hex characters
    strength: Strength
    meaning: str  # what an agreement says, for the user
    prefix: str  # query prefix (`sha256:<hex>`)
    by_hash: bool  # Civitai's GET /model-versions/by-hash accepts it as it is
    # The kind whose first `length` hex characters this one is (AutoV2 = SHA256[:10]): derived, never
    # hashed, and two values that disagree with their parent are refused.
    prefix_of: str | None = None
    # Its column carries a database index: every kind a lookup searches by does; AutoV3_full is
    # found through its indexed prefix AutoV3 and compared in full only on the rows that index finds.
    indexed: bool = True


REGISTRY: tuple[HashKind, ...] = (
    HashKind("SHA256", "SHA256", "sha256", 64, Strength.EXACT, "the whole file is identical", "sha256", True),
    HashKind("AutoV1", "AutoV1", "autov1", 8, Strength.SHORT_HASH,
             "A1111's old hash of 64 KiB at 1 MiB agrees: weak, different files can share it", "autov1", True),
    HashKind("AutoV2", "AutoV2", "autov2", 10, Strength.SHORT_HASH,
             "the first 10 hex of the SHA256 agree (A1111's model hash): almost surely the same file", "autov2", True,
             prefix_of="SHA256"),
    HashKind("AutoV3", "AutoV3", "autov3", 12, Strength.SAME_WEIGHTS,
             "the tensor data (everything after the safetensors header) is identical", "autov3", True,
             prefix_of="AutoV3_full"),
    HashKind("CRC32", "CRC32", "crc32", 8, Strength.SHORT_HASH,
             "the CRC32 agrees: weak, a checksum rather than a hash", "crc32", True),
    HashKind("BLAKE3", "BLAKE3", "blake3", 64, Strength.EXACT, "the whole file is identical", "blake3", True),
    # kohya's whole addnet hash (`sshs_model_hash`); Civitai stores and matches only its first 12 (AutoV3).
    HashKind("AutoV3_full", None, "autov3_full", 64, Strength.SAME_WEIGHTS,
             "the tensor data (everything after the safetensors header) is identical", "autov3_full", False,
             indexed=False),
    # Some Forge builds write SHA256[:12] as "Model hash" in image infotext. Civitai is adding this kind but
    # neither lists it in files[].hashes nor matches it in by-hash yet (shared/reference/civitai-api.md):
    # a 12-hex GET there matches AutoV3 only. We derive it from the SHA256 we always have and compare it
    # here; when Civitai ships it, set civitai="SHA256_12" and by_hash=True.
    HashKind("SHA256_12", None, "sha256_12", 12, Strength.SHORT_HASH,
             "the first 12 hex of the SHA256 agree (Forge's model hash): almost surely the same file", "sha256_12",
             False, prefix_of="SHA256"),
)

BY_NAME: dict[str, HashKind] = {k.name: k for k in REGISTRY}
NAMES: tuple[str, ...] = tuple(k.name for k in REGISTRY)
LENGTHS: dict[str, int] = {k.name: k.length for k in REGISTRY}
# The kinds Civitai prints, in its order: the `civitai_form` of every hash record.
CIVITAI_KINDS: tuple[HashKind, ...] = tuple(k for k in REGISTRY if k.civitai)
CIVITAI_NAMES: tuple[str, ...] = tuple(k.civitai for k in CIVITAI_KINDS)
# Every HashFields column, in registry order.
FIELDS: tuple[str, ...] = tuple(k.field for k in REGISTRY)
DERIVED: tuple[HashKind, ...] = tuple(k for k in REGISTRY if k.prefix_of)
# Hex lengths Civitai's by-hash GET can match.
BY_HASH_LENGTHS: frozenset[int] = frozenset(k.length for k in REGISTRY if k.by_hash)
BY_HASH_LENGTHS_TEXT = ", ".join(str(n) for n in sorted(BY_HASH_LENGTHS)[:-1]) + f" or {max(BY_HASH_LENGTHS)}"


def kinds_of_length(n: int) -> tuple[str, ...]:
    """Kinds whose value has `n` hex characters, in registry order."""
    return tuple(k.name for k in REGISTRY if k.length == n)


def by_hash_form(name: str) -> HashKind | None:
    """The kind to send Civitai's by-hash for a value of kind `name`: itself if by-hash matches it, else
    the longest by-hash kind whose value is a prefix of it (AutoV3_full -> AutoV3, SHA256_12 -> AutoV2)."""
    kind = BY_NAME[name]
    if kind.by_hash:
        return kind
    prefixes = [k for k in REGISTRY if k.by_hash and (
        k.prefix_of == kind.name or (kind.prefix_of and k.prefix_of == kind.prefix_of and k.length < kind.length))]
    return max(prefixes, key=lambda k: k.length, default=None)


def empty_fields() -> dict[str, str]:
    """Every hash column blank: the start of a record that knows only some kinds."""
    return dict.fromkeys(FIELDS, "")


def with_derived(fields: dict[str, str]) -> dict[str, str]:
    """`fields` (column -> lower-case hex) with each derived kind filled from its parent where it is blank."""
    out = dict(fields)
    for kind in DERIVED:
        parent = BY_NAME[kind.prefix_of].field
        if not out.get(kind.field) and out.get(parent):
            out[kind.field] = out[parent][: kind.length]
    return out


def civitai_form(values: dict[str, str | None]) -> dict[str, str | None]:
    """Civitai's spelling -> upper-case hex (None where unknown), from column -> hex."""
    return {k.civitai: (values.get(k.field) or "").upper() or None for k in CIVITAI_KINDS}
