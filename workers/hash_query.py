"""Understand what a user pastes into the hash lookup box or `manage.py lookup`.

PURE: no Django. Accepts
- a bare hash (8, 10, 12 or 64 hex, any case, surrounding quotes/spaces ignored),
  or several separated by spaces, commas or newlines;
- a prefixed hash: `sha256:<hex>`, `blake3:<hex>` (InvokeAI's form), and
  `<kind>:` for every kind in workers/kinds.py (`autov2:`, `sha256_12:`, ...;
  case-insensitive);
- A1111/Forge generation parameters ("infotext"), a whole pasted block or one
  line: `Model hash`, `VAE hash`, `Lora hashes: "a: 0123456789ab, ..."`,
  `TI hashes: "..."`, `Refiner: name [hash]`, `Hires checkpoint: name [hash]`
  and Civitai's `Hashes: {"model": "...", "lora:x": "..."}` JSON.

Each hash becomes one `HashQuery` listing the hash kinds it may be
(`HashCandidate`); the lookup service tries them all. Anything else raises
`HashQueryError` with a message meant for the user.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from workers import kinds as _kinds

KINDS = _kinds.NAMES
# The only length each kind's value can have (workers/kinds.py).
KIND_LENGTHS = _kinds.LENGTHS

ACCEPTED_LENGTHS_TEXT = f"{_kinds.BY_HASH_LENGTHS_TEXT} hex characters"

# A pasted infotext is a few KB; anything far bigger is not something a person
# pasted on purpose, and the regexes below should never see megabytes.
MAX_QUERY_CHARS = 64 * 1024

_HEX = _kinds.HEX
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"

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

# Matches an infotext key we understand anywhere in the text: decides that the
# input is generation parameters rather than a list of hashes.
_INFOTEXT_KEYS = re.compile(
    r"(?i)(?:^|[\s,])(?:model hash|vae hash|lora hashes|ti hashes|hashes|refiner|hires checkpoint)\s*:"
)
# A1111's own parameter regex (modules/infotext_utils.py): `Key: value` with a
# value either JSON-quoted (commas allowed inside) or running to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_HASHES_JSON_START = re.compile(r"(?:^|[\s,])Hashes:\s*(?=\{)", re.IGNORECASE)
_NAME_WITH_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]+)\]\s*$")


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
            or not _HEX.fullmatch(self.value)
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
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        return ()
    return _kinds.kinds_of_length(len(value))


def parse_hash_query(text: str) -> list[HashQuery]:
    """Every hash in `text`, in order of appearance; raises HashQueryError if there is none
    or if any part is not a hash."""
    if not isinstance(text, str):
        raise HashQueryError(f"expected text to look up, got {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise HashQueryError(
            f"that is {len(text)} characters; paste a hash or one image's generation parameters "
            f"(at most {MAX_QUERY_CHARS} characters)"
        )
    trimmed = _trim(text)
    if not trimmed:
        raise HashQueryError(
            f"nothing to look up: paste a hash ({ACCEPTED_LENGTHS_TEXT}), a prefixed hash like "
            "sha256:<hex>, or an image's generation parameters"
        )
    if _INFOTEXT_KEYS.search(trimmed):
        return _parse_infotext(trimmed)
    # `sha256: abc` -> `sha256:abc` so that splitting on spaces keeps it whole.
    joined = re.sub(r"(?<=\w):\s+", ":", trimmed)
    tokens = [t for t in (_trim(t) for t in re.split(r"[\s,;]+", joined)) if t]
    return [_parse_token(token) for token in tokens]


# --- plain and prefixed hashes ---------------------------------------------

def _trim(text: str) -> str:
    return text.strip().strip(_QUOTES).strip()


def _parse_token(token: str) -> HashQuery:
    prefix, sep, rest = token.partition(":")
    if sep:
        return _parse_prefixed(token, prefix, _trim(rest))
    return _bare_hash_query(token, original=token)


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
    if not value or not _HEX.fullmatch(value):
        raise HashQueryError(f"{token!r} is not a hash: after {prefix}: expected hex characters (0-9, a-f)")
    for kind in kinds:
        if len(value) == KIND_LENGTHS[kind]:
            note = _NOTE_BLAKE3_INVOKE if kind == "BLAKE3" else None
            return HashQuery(token, (HashCandidate(kind, value.lower()),), note, None)
    wanted = " or ".join(str(KIND_LENGTHS[k]) for k in kinds)
    raise HashQueryError(
        f"{token!r} is not a hash: {prefix}: needs {wanted} hex characters, got {len(value)}"
    )


def _bare_hash_query(value: str, *, original: str, label: str | None = None) -> HashQuery:
    kinds = detect_kinds(value)
    if not kinds:
        raise HashQueryError(_not_a_hash_message(original, value))
    lower = value.lower()
    note = _NOTE_8 if len(lower) == 8 else _NOTE_64 if len(lower) == 64 else _ambiguity_note(kinds)
    return HashQuery(original, tuple(HashCandidate(k, lower) for k in kinds), note, label)


def _ambiguity_note(kinds: tuple[str, ...]) -> str | None:
    """Says which kinds a length shared by several (12 hex: AutoV3 and SHA256_12) is tried as."""
    if len(kinds) < 2:
        return None
    listed = "; ".join(f"{k} ({_kinds.BY_NAME[k].meaning})" for k in kinds)
    return f"{_kinds.LENGTHS[kinds[0]]} hex characters can be any of: {listed}. All are tried."


def _not_a_hash_message(original: str, value: str | None = None) -> str:
    value = original if value is None else value
    shown = original if len(original) <= 80 else original[:77] + "..."
    if not value:
        detail = "there are no hex characters in it"
    elif not _HEX.fullmatch(value):
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


# --- A1111 / Forge / Civitai generation parameters ---------------------------

def _parse_infotext(text: str) -> list[HashQuery]:
    queries: list[HashQuery] = []
    text, json_hashes = _cut_hashes_json(text)
    names: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.lower().startswith("negative prompt:"):
            continue
        for key, raw in _PARAM.findall(line):
            key_l = key.strip().lower()
            value = _unquote(raw.strip())
            if key_l in ("model", "vae"):
                names[key_l] = value
            elif key_l == "model hash":
                queries.append(_infotext_single(value, label="model", source=f"Model hash: {value}", old_8="AutoV1"))
            elif key_l == "vae hash":
                queries.append(_infotext_single(value, label="vae", source=f"VAE hash: {value}", old_8=None))
            elif key_l in ("refiner", "hires checkpoint"):
                m = _NAME_WITH_HASH.match(value)
                if m:  # without "[hash]" the line only names a model
                    label = "refiner" if key_l == "refiner" else "hires"
                    queries.append(_infotext_single(
                        m["hash"], label=label, source=f"{key.strip()}: {value}", old_8="AutoV1",
                        name=m["name"],
                    ))
            elif key_l == "lora hashes":
                queries.extend(_name_hash_list(value, kind="lora", source_key="Lora hashes"))
            elif key_l == "ti hashes":
                queries.extend(_name_hash_list(value, kind="embed", source_key="TI hashes"))
    queries = [_with_name(q, names) for q in queries]
    queries.extend(_from_hashes_json(json_hashes))
    unique = _dedupe(queries)
    if not unique:
        raise HashQueryError(
            "these generation parameters name no model hash: A1111 writes one only when "
            "'Model hash' / 'Lora hashes' are enabled in its settings"
        )
    return unique


def _cut_hashes_json(text: str) -> tuple[str, dict | None]:
    """Take Civitai's `Hashes: {...}` out of the text (its value holds unquoted commas)."""
    m = _HASHES_JSON_START.search(text)
    if not m:
        return text, None
    try:
        obj, end = json.JSONDecoder().raw_decode(text, m.end())
    except (json.JSONDecodeError, RecursionError):
        raise HashQueryError("the 'Hashes: {...}' part is not valid JSON (was it cut off?)") from None
    if not isinstance(obj, dict):
        raise HashQueryError("the 'Hashes:' part must be a JSON object of name -> hash")
    return text[: m.start()] + "," + text[end:], obj


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
        return decoded if isinstance(decoded, str) else value[1:-1]
    return value


def _infotext_single(
    value: str, *, label: str, source: str, old_8: str | None, name: str | None = None,
) -> HashQuery:
    value = _trim(value)
    if _HEX.fullmatch(value) and len(value) == 10:
        note = "AutoV2: the first 10 hex characters of the file's SHA256"
        return HashQuery(source, (HashCandidate("AutoV2", value.lower()),), _named(note, name), label)
    if _HEX.fullmatch(value) and len(value) == 8 and old_8:
        note = "an 8-character model hash is A1111's old AutoV1"
        return HashQuery(source, (HashCandidate(old_8, value.lower()),), _named(note, name), label)
    try:
        query = _bare_hash_query(value, original=source, label=label)
    except HashQueryError as exc:
        raise HashQueryError(f"in the generation parameters, {exc}") from None
    return HashQuery(query.text, query.candidates, _named(query.note, name), label)


def _name_hash_list(value: str, *, kind: str, source_key: str) -> list[HashQuery]:
    """`name1: hash1, name2: hash2` (A1111 strips ':' and ',' from the names)."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, hash_value = item.rpartition(":")
        name, hash_value = name.strip(), _trim(hash_value)
        if not sep or not name:
            raise HashQueryError(f"in {source_key}, {item!r} is not 'name: hash'")
        label = f"{kind}:{name}"
        if not _HEX.fullmatch(hash_value):
            raise HashQueryError(f"in {source_key}, {_not_a_hash_message(item, hash_value)}")
        out.append(_short_named_hash(hash_value.lower(), label=label, source=item, kind=kind))
    return out


def _short_named_hash(value: str, *, label: str, source: str, kind: str) -> HashQuery:
    if len(value) == 12 and kind == "lora":
        # A1111 shows hash[:12] where hash is the addnet hash (AutoV3) for
        # safetensors LoRAs but the plain SHA256 for .pt/.ckpt ones.
        return HashQuery(
            source,
            (HashCandidate("AutoV3", value), HashCandidate("SHA256_12", value)),
            "A1111's LoRA hash: AutoV3 for .safetensors files, else SHA256_12 (the start of the SHA256); "
            "both are tried",
            label,
        )
    if len(value) == 12 and kind == "embed":
        return HashQuery(
            source,
            (HashCandidate("SHA256_12", value),),
            "A1111's embedding hash is SHA256_12, the first 12 characters of the SHA256",
            label,
        )
    try:
        return _bare_hash_query(value, original=source, label=label)
    except HashQueryError as exc:
        raise HashQueryError(f"in the generation parameters, {exc}") from None


def _from_hashes_json(obj: dict | None) -> list[HashQuery]:
    if not obj:
        return []
    out = []
    for key, value in obj.items():
        if not isinstance(value, str):
            raise HashQueryError(f"in 'Hashes:', the value for {key!r} is not a hash string")
        res_type, sep, name = key.partition(":")
        res_type = res_type.strip().lower()
        if sep:
            kind = {"lyco": "lora", "lycoris": "lora", "embedding": "embed", "ti": "embed"}.get(res_type, res_type)
            label = f"{kind}:{name.strip()}"
        else:
            kind, label = res_type, res_type
        source = f"{key}: {value}"
        value = _trim(value)
        if not _HEX.fullmatch(value):
            raise HashQueryError(f"in 'Hashes:', {_not_a_hash_message(source, value)}")
        if kind in ("model", "vae") or len(value) != 12:
            q = _bare_hash_query(value, original=source, label=label)
        else:
            q = _short_named_hash(value.lower(), label=label, source=source, kind=kind)
        out.append(q)
    return out


def _named(note: str | None, name: str | None) -> str | None:
    if not name:
        return note
    return f"named {name!r}; {note}" if note else f"named {name!r}"


def _with_name(query: HashQuery, names: dict[str, str]) -> HashQuery:
    name = names.get(query.label or "")
    if not name:
        return query
    return HashQuery(query.text, query.candidates, _named(query.note, name), query.label)


def _dedupe(queries: list[HashQuery]) -> list[HashQuery]:
    """The same hash often appears twice (Model hash and Hashes["model"])."""
    seen: set[tuple] = set()
    out = []
    for q in queries:
        key = (q.label.lower() if q.label else None, q.candidates)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out
