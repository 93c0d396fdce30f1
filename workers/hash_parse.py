"""Bare and prefixed hashes: which hash kinds a pasted value may be (PURE: no Django).

- a bare hash (8, 10, 12 or 64 hex, any case, surrounding quotes/spaces ignored),
  or several separated by spaces, commas or newlines;
- a prefixed hash: `sha256:<hex>`, `blake3:<hex>` (InvokeAI's form), and
  `<kind>:` for every kind in workers/kinds.py (`autov2:`, `sha256_12:`, ...;
  case-insensitive).

Each hash becomes one `HashQuery` listing the hash kinds it may be
(`HashCandidate`). Generation parameters are read by workers/infotext.py with
the same types; workers/hash_query.py decides which of the two a paste is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from workers import kinds as _kinds

KINDS = _kinds.NAMES
# The only length each kind's value can have (workers/kinds.py).
KIND_LENGTHS = _kinds.LENGTHS

ACCEPTED_LENGTHS_TEXT = f"{_kinds.BY_HASH_LENGTHS_TEXT} hex characters"

HEX = _kinds.HEX
QUOTES = "\"'`\u201c\u201d\u2018\u2019"

_PREFIXES = {k.prefix: (k.name,) for k in _kinds.REGISTRY}
_PREFIXES["autov3"] += ("AutoV3_full",)  # `autov3:<64 hex>` is the whole addnet hash: chosen by length
# Algorithms people meet elsewhere (InvokeAI accepts any hashlib name, HF shows
# git SHA-1) that no model catalog indexes: say so instead of "not a hash".
_FOREIGN_PREFIXES = ("md5", "sha1", "sha224", "sha384", "sha512", "sha3_256", "blake2b", "blake2s", "random")

_NOTE_8 = (
    "8 hex characters can be an AutoV1 (A1111's old model hash) or a CRC32; "
    "both are tried. CRC32 is read in Civitai's byte order (as Civitai prints it, "
    "not zlib's integer)."
)
_NOTE_64 = (
    "64 hex characters can be a SHA256 or BLAKE3 of the whole file, or a full "
    "AutoV3 (a kohya sshs_model_hash, whose first 12 characters are Civitai's AutoV3); "
    "all are tried."
)
_NOTE_BLAKE3_INVOKE = (
    "InvokeAI's blake3 of a diffusers folder hashes the per-file hashes, so it "
    "matches a folder, not a single file."
)


class HashQueryError(ValueError):
    """The pasted text is not a hash (or holds one that is not); `str()` is for the user."""


@dataclass(frozen=True)
class HashCandidate:
    """One way to read a hash: `kind` in KINDS, `value` lower-case hex of that kind's length."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in KIND_LENGTHS:
            raise HashQueryError(f"unknown hash kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        if (
            not isinstance(self.value, str)
            or len(self.value) != KIND_LENGTHS[self.kind]
            or not HEX.fullmatch(self.value)
            or self.value != self.value.lower()
        ):
            raise HashQueryError(
                f"{self.kind} must be {KIND_LENGTHS[self.kind]} lower-case hex characters, got {self.value!r}"
            )


@dataclass(frozen=True)
class HashQuery:
    """One hash found in the input.

    `text` is the fragment it came from (as pasted), `label` says what it names
    when the input said so ("model", "vae", "lora:<name>", "embed:<name>",
    "refiner", "hires"), `note` explains an ambiguity or a conversion.
    """

    text: str
    candidates: tuple[HashCandidate, ...]
    note: str | None = None
    label: str | None = None

    @property
    def kinds_tried(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.candidates)


def detect_kinds(value: str) -> tuple[str, ...]:
    """Hash kinds a bare hex string of this length can be; () if it is not one."""
    if not isinstance(value, str) or not HEX.fullmatch(value):
        return ()
    return _kinds.kinds_of_length(len(value))


def parse_hashes(text: str) -> list[HashQuery]:
    """Every hash in `text` (already trimmed, not generation parameters), in order; raises
    HashQueryError for any part that is not a hash."""
    # `sha256: abc` -> `sha256:abc` so that splitting on spaces keeps it whole.
    joined = re.sub(r"(?<=\w):\s+", ":", text)
    tokens = [t for t in (trim(t) for t in re.split(r"[\s,;]+", joined)) if t]
    return [_parse_token(token) for token in tokens]


def trim(text: str) -> str:
    return text.strip().strip(QUOTES).strip()


def _parse_token(token: str) -> HashQuery:
    prefix, sep, rest = token.partition(":")
    if sep:
        return _parse_prefixed(token, prefix, trim(rest))
    return bare_hash_query(token, original=token)


def _parse_prefixed(token: str, prefix: str, value: str) -> HashQuery:
    key = prefix.strip().lower()
    if key in _FOREIGN_PREFIXES:
        raise HashQueryError(
            f"{prefix}: hashes are not indexed by Civitai, Hugging Face weights or this catalog; "
            "use a SHA256, BLAKE3, AutoV1/AutoV2/AutoV3 or CRC32"
        )
    kinds = _PREFIXES.get(key)
    if kinds is None:
        raise HashQueryError(
            f"{token!r} is not a hash: unknown prefix {prefix!r} "
            f"(known: {', '.join(p + ':' for p in _PREFIXES)})"
        )
    if not value or not HEX.fullmatch(value):
        raise HashQueryError(f"{token!r} is not a hash: after {prefix}: expected hex characters (0-9, a-f)")
    for kind in kinds:
        if len(value) == KIND_LENGTHS[kind]:
            note = _NOTE_BLAKE3_INVOKE if kind == "BLAKE3" else None
            return HashQuery(token, (HashCandidate(kind, value.lower()),), note, None)
    wanted = " or ".join(str(KIND_LENGTHS[k]) for k in kinds)
    raise HashQueryError(
        f"{token!r} is not a hash: {prefix}: needs {wanted} hex characters, got {len(value)}"
    )


def bare_hash_query(value: str, *, original: str, label: str | None = None) -> HashQuery:
    kinds = detect_kinds(value)
    if not kinds:
        raise HashQueryError(not_a_hash_message(original, value))
    lower = value.lower()
    note = _NOTE_8 if len(lower) == 8 else _NOTE_64 if len(lower) == 64 else _ambiguity_note(kinds)
    return HashQuery(original, tuple(HashCandidate(k, lower) for k in kinds), note, label)


def _ambiguity_note(kinds: tuple[str, ...]) -> str | None:
    """Says which kinds a length shared by several (12 hex: AutoV3 and SHA256_12) is tried as."""
    if len(kinds) < 2:
        return None
    listed = "; ".join(f"{k} ({_kinds.BY_NAME[k].meaning})" for k in kinds)
    return f"{_kinds.LENGTHS[kinds[0]]} hex characters can be any of: {listed}. All are tried."


def not_a_hash_message(original: str, value: str | None = None) -> str:
    value = original if value is None else value
    shown = original if len(original) <= 80 else original[:77] + "..."
    if not value:
        detail = "there are no hex characters in it"
    elif not HEX.fullmatch(value):
        bad = sorted({c for c in value if c not in "0123456789abcdefABCDEF"})[:5]
        detail = f"it contains {', '.join(repr(c) for c in bad)}, which hex never does"
    elif len(value) == 40:
        detail = "got 40, which looks like a git SHA-1 (Hugging Face shows those for small files, not weights)"
    elif len(value) == 32:
        detail = "got 32, which looks like an MD5"
    else:
        detail = f"got {len(value)}"
    return (
        f"{shown!r} is not a hash: expected {ACCEPTED_LENGTHS_TEXT}, "
        f"a prefixed hash like sha256:<hex>, or generation parameters; {detail}"
    )
