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
`HashQueryError` with a message meant for the user. Bare and prefixed hashes
are read by workers/hash_parse.py, generation parameters by workers/infotext.py;
this module decides which a paste is.
"""
from __future__ import annotations

from workers.hash_parse import ACCEPTED_LENGTHS_TEXT, HashQuery, HashQueryError, parse_hashes, trim
from workers.infotext import looks_like_infotext, parse_infotext

# A pasted infotext is a few KB; anything far bigger is not something a person
# pasted on purpose, and the parsers' regexes should never see megabytes.
MAX_QUERY_CHARS = 64 * 1024


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
    trimmed = trim(text)
    if not trimmed:
        raise HashQueryError(
            f"nothing to look up: paste a hash ({ACCEPTED_LENGTHS_TEXT}), a prefixed hash like "
            "sha256:<hex>, or an image's generation parameters"
        )
    if looks_like_infotext(trimmed):
        return parse_infotext(trimmed)
    return parse_hashes(trimmed)
