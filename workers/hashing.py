"""One-pass hashing of model files and diffusers folders (PURE: no Django).

A model file is read ONCE and every hash Civitai, A1111, kohya and InvokeAI use
is computed from that single stream: SHA256 (AutoV2 is its prefix), AutoV1,
AutoV3 (a second SHA-256 over the bytes after the safetensors header), CRC32
and BLAKE3. Reading is the cheap part (page cache ~12 GB/s); the two SHA-256
streams are the floor of the work, so each big hasher gets its own thread and
they share a small ring of page-aligned buffers (hashlib and blake3 release
the GIL on large buffers; unaligned bytearrays cost 30-50% here). Memory stays
constant: RING_DEPTH * buffer_size, whatever the file size.

Exact definitions: /work/shared/reference/hashes.md (copied into the
docstrings of hash_records and hash_engine where a detail matters).

The engine lives in three modules: hash_records (ComputedHashes, FolderHashes,
FileIdentity, the errors, the constants that define the hashes), hash_engine
(one read of one file) and hash_folders (diffusers folders). This module is
the stable import point: the rest of the code base imports the public names
below from workers.hashing, and `python -m workers.hashing PATH...` is its
command line. Tunables (RING_DEPTH, BLAKE3_MAX_THREADS...) are not re-exported:
setting them here would change nothing; set them on workers.hash_engine.
"""

from __future__ import annotations

import json
import os
import sys

from workers.hash_engine import (
    CRC32_IMPLEMENTATION,
    TEST_PACE_ENV,
    file_identity,
    hash_file,
    hash_file_and_identity,
)
from workers.hash_folders import hash_folder, is_diffusers_folder
from workers.hash_records import (
    AUTOV1_MIN_SIZE,
    INVOKEAI_MODEL_SUFFIXES,
    WEIGHT_SUFFIXES,
    ComputedHashes,
    ComputedMember,
    FileChangedError,
    FileIdentity,
    FolderHashes,
    HashesFormatError,
    HashingError,
    MiB,
    Progress,
    SymlinkRefused,
    invokeai_folder_digest,
)

__all__ = [
    "AUTOV1_MIN_SIZE", "CRC32_IMPLEMENTATION", "INVOKEAI_MODEL_SUFFIXES", "TEST_PACE_ENV", "WEIGHT_SUFFIXES",
    "ComputedHashes", "ComputedMember", "FileChangedError", "FileIdentity", "FolderHashes", "HashesFormatError",
    "HashingError", "MiB", "Progress", "SymlinkRefused", "file_identity", "hash_file", "hash_file_and_identity",
    "hash_folder", "invokeai_folder_digest", "is_diffusers_folder", "main",
]


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.hashing PATH...`: one JSON object per line, each with its "path"."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m workers.hashing PATH [PATH...]", file=sys.stderr)
        return 2
    status = 0
    for arg in args:
        try:
            result: ComputedHashes | FolderHashes = hash_folder(arg) if os.path.isdir(arg) else hash_file(arg)
        except HashingError as exc:
            print(f"hashing: {exc}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"path": arg, **result.to_json()}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
