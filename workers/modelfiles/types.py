"""Plain types shared by the model-file readers, the scanner and the fingerprint.

PURE: no Django, no torch. Every reader in this package raises
`ModelFileError` (or a subclass) for input it cannot handle, never anything else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# Names as safetensors spells them; readers of other containers map to these.
DType = Literal[
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "I64", "U64", "F64", "C64",
]

FLOAT_DTYPES = frozenset({"F8_E5M2", "F8_E4M3", "F16", "BF16", "F32", "F64"})

Format = Literal[
    "safetensors", "torch-zip", "torch-legacy", "torch-tar", "pickle",
    "npy", "npz", "gguf", "7z", "zip", "diffusers", "unknown",
]

Verdict = Literal["safe", "suspicious", "dangerous", "unreadable"]

# Each format and verdict in the words a person holding the file needs (the CLI prints these).
FORMAT_MEANING: dict[str, str] = {
    "safetensors": "tensors and a JSON header, no code",
    "torch-zip": "a PyTorch zip checkpoint; a pickle inside describes its tensors",
    "torch-legacy": "a legacy PyTorch checkpoint: a series of pickles",
    "torch-tar": "an old PyTorch tar checkpoint with pickles inside",
    "pickle": "a bare pickle",
    "npy": "a NumPy array", "npz": "a NumPy archive",
    "gguf": "llama.cpp / quantised weights",
    "7z": "a 7-Zip archive", "zip": "a zip archive that is not a PyTorch checkpoint",
    "diffusers": "one model in several weight files, with their configs",
    "unknown": "no model format ModelXRef knows",
}
VERDICT_MEANING: dict[str, str] = {
    "safe": "nothing in it can run code when it is loaded",
    "suspicious": "it holds things outside the allowlist (listed below), none known to run code",
    "dangerous": "loading it with torch.load or pickle could run code: do not load it",
    "unreadable": "it could not be read to the end, so what it would do when loaded is unknown",
}


class ModelFileError(Exception):
    """A file is not something we can read (corrupt, truncated, hostile, unsupported)."""


class TruncatedFileError(ModelFileError):
    """The file ends before its own structure says it should: almost always an incomplete download.
    Its message is meant for people ("truncated: 16 of 64 data bytes present — an incomplete download?")."""


INCOMPLETE = "an incomplete download?"


class UnsupportedModelFile(ModelFileError):
    """The file looks valid but uses something our readers do not read (a newer dtype, a
    compressed torch zip): no fingerprint, but not "unreadable" either."""


@dataclass(frozen=True)
class Tensor:
    """One tensor as the fingerprint sees it.

    `array` holds the values little-endian, C-contiguous, with numpy's dtype for
    `dtype`; kinds numpy lacks are carried as raw bits of the same width
    (BF16 -> uint16, F8_* -> uint8). `name` is informative only: the
    fingerprint never hashes names.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass(frozen=True)
class Finding:
    """One thing the pickle scanner noticed. `where` is e.g. 'archive/data.pkl@1234'."""

    severity: Literal["safe", "suspicious", "dangerous", "unreadable"]
    what: str   # e.g. the global 'os.system', or 'duplicate zip entry'
    where: str
    why: str


@dataclass(frozen=True)
class SafetyReport:
    verdict: Verdict
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    globals_seen: tuple[str, ...] = field(default_factory=tuple)  # 'module.name', sorted
