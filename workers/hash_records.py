"""What the hash engine produces and how a hashes document is checked: the records, the constants
that define the hashes, the errors (PURE: no Django).

ComputedHashes / FolderHashes are what the engine returns and what a cache row
or a pushed record is rebuilt into (from_json validates: pushed records come
from other hosts). The InvokeAI folder digest lives here because validating a
FolderHashes recomputes it. Import these through workers.hashing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3 as _blake3_module

from workers import kinds

MiB = 1024 * 1024

# AutoV1 (A1111's old "model hash"): SHA-256 of 0x10000 bytes at 0x100000.
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
# Civitai's model-scanner (HashTask.ComputeAutoV1Hash) stores no AutoV1 below
# 2 MiB, although A1111 would hash whatever short read it got.
AUTOV1_MIN_SIZE = 2 * MiB
# Civitai's legacy scanner: a "header length" this large is a .ckpt or
# garbage, and it hashed from byte 8 onward instead.
AUTOV3_LEGACY_HEADER_LIMIT = 16 * MiB
# We only parse a safetensors JSON header this large for embedded hashes.
EMBEDDED_HEADER_LIMIT = 100_000_000
# Embedded values longer than this are not hashes; keep junk out of the DB.
EMBEDDED_VALUE_MAX_CHARS = 128

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".sft")
# InvokeAI's MODEL_FILE_EXTENSIONS (invokeai/backend/model_hash/model_hash.py):
# only these count in its folder hash, matched case-sensitively with endswith.
INVOKEAI_MODEL_SUFFIXES = (".ckpt", ".safetensors", ".bin", ".pt", ".pth")

Progress = Callable[[int, int], None]


class HashingError(Exception):
    """A file or folder could not be hashed; the message says which and why."""


class FileChangedError(HashingError):
    """The file kept changing while it was being hashed, even after retries."""


class SymlinkRefused(HashingError):
    """A path that must name a regular file names a symbolic link (swapped in after it was checked)."""


class HashesFormatError(HashingError, ValueError):
    """A hashes JSON document (cache row, pushed record) is malformed."""


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int
    size: int
    mtime_ns: int


_DERIVED_BY_FIELD = {k.field: k for k in kinds.DERIVED}


@dataclass(frozen=True)
class ComputedHashes:
    """What the engine computed for one file (kept apart by name from the FileHashes table it is stored in)."""

    size: int
    sha256: str
    autov1: str | None
    autov3_full: str | None
    crc32: str
    blake3: str
    embedded_model_hash: str | None = None
    embedded_legacy_hash: str | None = None

    def __getattr__(self, name: str) -> str | None:
        # A derived kind (AutoV2, AutoV3, SHA256_12: kinds.DERIVED) is the start of a hash this record
        # keeps, so it is read off that hash instead of stored: a new derived kind needs no code here.
        kind = _DERIVED_BY_FIELD.get(name)
        if kind is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        parent = getattr(self, kinds.BY_NAME[kind.prefix_of].field)
        return None if parent is None else parent[: kind.length]

    def civitai_form(self) -> dict[str, str | None]:
        return kinds.civitai_form({k.field: getattr(self, k.field) for k in kinds.CIVITAI_KINDS})

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.civitai_form())
        doc["size"] = self.size
        doc["autov3_full"] = self.autov3_full
        doc["embedded"] = {
            "sshs_model_hash": self.embedded_model_hash,
            "sshs_legacy_hash": self.embedded_legacy_hash,
        }
        return doc

    @classmethod
    def from_json(cls, d: Any) -> ComputedHashes:
        """Rebuild from to_json(); validates, since pushed records come from other hosts."""
        if not isinstance(d, dict):
            raise HashesFormatError(f"hashes must be a JSON object, got {type(d).__name__}")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HashesFormatError(f"hashes 'size' must be a non-negative integer, got {size!r}")
        sha256 = _hex_field(d, "SHA256", 64)
        autov1 = _hex_field(d, "AutoV1", 8, optional=True)
        autov3_full = _hex_field(d, "autov3_full", 64, optional=True)
        crc32 = _hex_field(d, "CRC32", 8)
        blake3 = _hex_field(d, "BLAKE3", 64)
        if (autov1 is None) != (size < AUTOV1_MIN_SIZE):
            raise HashesFormatError(
                f"AutoV1 must be present exactly when size >= {AUTOV1_MIN_SIZE} (size {size}, AutoV1 {autov1!r})"
            )
        if (autov3_full is None) != (size < 8):
            raise HashesFormatError(
                f"autov3_full must be present exactly when size >= 8 (size {size}, autov3_full {autov3_full!r})"
            )
        kept = {"sha256": sha256, "autov1": autov1, "autov3_full": autov3_full, "crc32": crc32, "blake3": blake3}
        for kind in kinds.DERIVED:
            key, parent = kind.civitai or kind.name, kept[kinds.BY_NAME[kind.prefix_of].field]
            derived = parent and parent[: kind.length]
            given = d.get(key)
            if given is not None and (not isinstance(given, str) or given.lower() != derived):
                raise HashesFormatError(f"{key} {given!r} does not agree with the full hash it derives from")
        embedded = d.get("embedded") or {}
        if not isinstance(embedded, dict):
            raise HashesFormatError("'embedded' must be an object")
        return cls(
            size=size,
            sha256=sha256,
            autov1=autov1,
            autov3_full=autov3_full,
            crc32=crc32,
            blake3=blake3,
            embedded_model_hash=embedded_value(embedded.get("sshs_model_hash")),
            embedded_legacy_hash=embedded_value(embedded.get("sshs_legacy_hash")),
        )


@dataclass(frozen=True)
class ComputedMember:
    """One weight file of a hashed folder (stored as a FolderMember row)."""

    relative_path: str  # posix separators, relative to the folder
    hashes: ComputedHashes

    @property
    def in_invokeai_digest(self) -> bool:
        return self.relative_path.endswith(INVOKEAI_MODEL_SUFFIXES)


@dataclass(frozen=True)
class FolderHashes:
    size: int
    digest: str
    members: tuple[ComputedMember, ...]

    @property
    def invokeai_hash(self) -> str:
        return f"blake3:{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "digest": self.digest,
            "invokeai_hash": self.invokeai_hash,
            "members": [{"relative_path": m.relative_path, "hashes": m.hashes.to_json()} for m in self.members],
        }

    @classmethod
    def from_json(cls, d: Any) -> FolderHashes:
        if not isinstance(d, dict) or not isinstance(d.get("members"), list):
            raise HashesFormatError("folder hashes must be an object with a 'members' list")
        members = []
        for item in d["members"]:
            if not isinstance(item, dict) or not isinstance(item.get("relative_path"), str):
                raise HashesFormatError("each folder member needs a 'relative_path' string")
            members.append(ComputedMember(item["relative_path"], ComputedHashes.from_json(item.get("hashes"))))
        members.sort(key=lambda m: invokeai_sort_key(m.relative_path))
        digest = _hex_field(d, "digest", 64)
        if digest != invokeai_folder_digest(m.hashes.blake3 for m in members if m.in_invokeai_digest):
            raise HashesFormatError("folder digest does not match its members' BLAKE3 hashes")
        return cls(size=sum(m.hashes.size for m in members), digest=digest, members=tuple(members))


def invokeai_folder_digest(member_blake3_hexdigests: Any) -> str:
    """InvokeAI's composite: BLAKE3 over the concatenated lower-hex BLAKE3 digests, in sorted path order.

    From invokeai/backend/model_hash/model_hash.py, ModelHash._hash_dir (default
    algorithm "blake3_single"): files come from os.walk(dir) (symlinked dirs not
    followed, symlinked files included), filtered by name.endswith(
    (".ckpt", ".safetensors", ".bin", ".pt", ".pth")), ordered by sorted() on
    their Path objects, and `composite_hasher.update(h.encode("utf-8"))` for
    each per-file hexdigest; InvokeAI shows the result as "blake3:<hex>".
    """
    composite = _blake3_module.blake3()
    for hexdigest in member_blake3_hexdigests:
        composite.update(hexdigest.lower().encode("ascii"))
    return composite.hexdigest()


def invokeai_sort_key(relative_path: str) -> tuple[str, ...]:
    # pathlib orders paths part by part, not as strings: "a/b" < "a-b".
    return tuple(relative_path.split("/"))


def embedded_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if 0 < len(value) <= EMBEDDED_VALUE_MAX_CHARS else None


def _hex_field(d: dict[str, Any], key: str, length: int, *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) != length or not kinds.HEX.fullmatch(value):
        raise HashesFormatError(f"hashes '{key}' must be {length} hex characters, got {value!r}")
    return value.lower()
