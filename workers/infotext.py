"""A1111 / Forge / Civitai generation parameters ("infotext"): the hashes they name (PURE: no Django).

A whole pasted block or one line: `Model hash`, `VAE hash`,
`Lora hashes: "a: 0123456789ab, ..."`, `TI hashes: "..."`, `Refiner: name [hash]`,
`Hires checkpoint: name [hash]` and Civitai's `Hashes: {"model": "...", "lora:x": "..."}`
JSON. Each hash is a workers.hash_parse.HashQuery labelled with what it names.
"""
from __future__ import annotations

import json
import re

from workers.hash_parse import HEX, HashCandidate, HashQuery, HashQueryError, bare_hash_query, not_a_hash_message, trim

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


def looks_like_infotext(text: str) -> bool:
    """An infotext key we understand appears somewhere: the paste is generation parameters."""
    return bool(_INFOTEXT_KEYS.search(text))


def parse_infotext(text: str) -> list[HashQuery]:
    """Every hash the generation parameters name, each once; raises HashQueryError if none."""
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
    value = trim(value)
    if HEX.fullmatch(value) and len(value) == 10:
        note = "AutoV2: the first 10 hex characters of the file's SHA256"
        return HashQuery(source, (HashCandidate("AutoV2", value.lower()),), _named(note, name), label)
    if HEX.fullmatch(value) and len(value) == 8 and old_8:
        note = "an 8-character model hash is A1111's old AutoV1"
        return HashQuery(source, (HashCandidate(old_8, value.lower()),), _named(note, name), label)
    try:
        query = bare_hash_query(value, original=source, label=label)
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
        name, hash_value = name.strip(), trim(hash_value)
        if not sep or not name:
            raise HashQueryError(f"in {source_key}, {item!r} is not 'name: hash'")
        label = f"{kind}:{name}"
        if not HEX.fullmatch(hash_value):
            raise HashQueryError(f"in {source_key}, {not_a_hash_message(item, hash_value)}")
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
        return bare_hash_query(value, original=source, label=label)
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
        value = trim(value)
        if not HEX.fullmatch(value):
            raise HashQueryError(f"in 'Hashes:', {not_a_hash_message(source, value)}")
        if kind in ("model", "vae") or len(value) != 12:
            q = bare_hash_query(value, original=source, label=label)
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
