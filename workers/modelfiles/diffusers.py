"""Read the layout of a diffusers folder: which components, which weight files.

PURE: no Django, no torch; reads JSON and lists directories, never opens a
weight file (callers sniff and read those by content).

Selection rules, mirroring what diffusers/transformers load:
- components are the model_index.json keys whose value is a [library, class]
  pair of strings and whose subfolder exists;
- weight names are `diffusion_pytorch_model`, `model` or `pytorch_model` with
  `.safetensors` or `.bin`; a variant tag sits before the extension
  (`model.fp16.safetensors`), before the shard suffix
  (`model.fp16-00001-of-00002.safetensors`), or in an index name
  (`model.safetensors.index.fp16.json`, and the non-canonical
  `model.fp16.safetensors.index.json` seen in the wild);
- without `variant=`, a component uses its no-variant files, safetensors
  before .bin; if it has none but exactly one variant, that variant is used
  (a folder downloaded with variant="fp16" only holds those) and a note says so;
- with `variant=`, a component without that variant falls back to its
  no-variant files (as diffusers does), with a note;
- shard names in an index must be plain names in the same folder.
`*.py` files are code (custom pipelines or models): they are listed, never imported.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from workers.modelfiles.types import ModelFileError

MAX_INDEX_BYTES = 64 * 1024 * 1024  # weight_map of the largest real models is a few MB
MAX_MODEL_INDEX_BYTES = 1024 * 1024
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
WEIGHT_EXTENSIONS = ("safetensors", "bin")  # preference order

_STEM = "(?P<stem>" + "|".join(WEIGHT_STEMS) + ")"
_EXT = "(?P<ext>safetensors|bin)"
_VARIANT = r"(?:\.(?P<variant>[A-Za-z0-9_]+))?"
_SINGLE_RE = re.compile(rf"^{_STEM}{_VARIANT}\.{_EXT}$")
_SHARD_RE = re.compile(rf"^{_STEM}{_VARIANT}-(?P<index>\d{{5}})-of-(?P<count>\d{{5}})\.{_EXT}$")
_INDEX_RE = re.compile(rf"^{_STEM}\.{_EXT}\.index{_VARIANT}\.json$")
_INDEX_ALT_RE = re.compile(rf"^{_STEM}\.(?P<variant>[A-Za-z0-9_]+)\.{_EXT}\.index\.json$")


@dataclass(frozen=True)
class DiffusersComponent:
    name: str  # the model_index.json key, e.g. "unet"
    folder: Path
    weight_files: tuple[Path, ...]  # empty for schedulers, tokenizers, ...
    variant: str | None  # the variant the files carry, None for the default ones
    library: str = ""  # e.g. "diffusers", "transformers"
    class_name: str = ""  # e.g. "UNet2DConditionModel"


@dataclass(frozen=True)
class DiffusersFolder:
    root: Path
    components: tuple[DiffusersComponent, ...]  # in model_index.json order
    variants_present: tuple[str, ...]  # every variant tag seen in any component, sorted
    pipeline_class: str  # model_index.json "_class_name", "" if absent
    code_files: tuple[Path, ...] = ()  # *.py at the root or in a component folder: never imported
    notes: tuple[str, ...] = field(default_factory=tuple)

    def component(self, name: str) -> DiffusersComponent | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass
class _Candidate:
    """One way of storing a component's weights: a single file, an index, or bare shards."""

    stem: str
    ext: str
    variant: str | None
    single: Path | None = None
    index: Path | None = None
    shards: dict[int, tuple[int, Path]] = field(default_factory=dict)  # number -> (count, path)


def read_model_index(path: str | os.PathLike) -> dict:
    """A diffusers folder's model_index.json, checked to be an object with a string `_class_name`."""
    root = Path(path)
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise ModelFileError(f"{root} is not a diffusers folder (no model_index.json)")
    model_index = _read_json(index_path, limit=MAX_MODEL_INDEX_BYTES)
    if not isinstance(model_index, dict):
        raise ModelFileError("model_index.json is not a JSON object")
    if not isinstance(model_index.get("_class_name", ""), str):
        raise ModelFileError("model_index.json _class_name is not a string")
    return model_index


def read_diffusers_folder(path: str | os.PathLike, *, variant: str | None = None) -> DiffusersFolder:
    root = Path(path)
    model_index = read_model_index(root)
    pipeline_class = model_index.get("_class_name", "")

    notes: list[str] = []
    code_files = _python_files(root)
    listed: list[tuple[str, str, str, Path, dict[tuple[str | None, str], _Candidate]]] = []
    variants_present: set[str] = set()
    for name, value in model_index.items():
        if name.startswith("_") or not _is_library_class_pair(value):
            continue
        if not _is_plain_name(name):
            raise ModelFileError(f"model_index.json names a component outside the folder: {name[:200]!r}")
        folder = root / name
        if not folder.is_dir():
            notes.append(f"component {name!r} is listed but has no folder")
            continue
        code_files += _python_files(folder)
        candidates = _weight_candidates(folder)
        variants_present.update(v for (v, _ext) in candidates if v is not None)
        listed.append((name, value[0], value[1], folder, candidates))

    if variant is not None and variant not in variants_present:
        raise ModelFileError(
            f"variant {variant!r} is not in this folder (present: {sorted(variants_present) or 'none'})")

    components = []
    for name, library, class_name, folder, candidates in listed:
        chosen_variant, files = _select(name, folder, candidates, variant=variant, notes=notes)
        components.append(DiffusersComponent(
            name=name, folder=folder, weight_files=files, variant=chosen_variant,
            library=library, class_name=class_name))
    if code_files:
        notes.append(f"{len(code_files)} Python file(s) present: code, never imported")
    return DiffusersFolder(
        root=root, components=tuple(components), variants_present=tuple(sorted(variants_present)),
        pipeline_class=pipeline_class, code_files=tuple(sorted(code_files)), notes=tuple(notes))


def _is_library_class_pair(value: object) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, str) and v for v in value))


def _is_plain_name(name: str) -> bool:
    """A bare file or folder name: no separators, no '.'/'..', not absolute, no NUL."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name and not os.path.isabs(name) and ":" not in name)


def _read_json(path: Path, *, limit: int) -> object:
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from exc
    if len(raw) > limit:
        raise ModelFileError(f"{path.name} is larger than {limit} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path.name} is not valid JSON: {str(exc)[:200]}") from exc


def _python_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.suffix == ".py" and not p.is_dir()]
    except OSError as exc:
        raise ModelFileError(f"cannot list {folder}: {exc}") from exc


def _weight_candidates(folder: Path) -> dict[tuple[str | None, str], _Candidate]:
    """Group the weight files of one component folder by (variant, extension)."""
    by_key: dict[tuple[str, str | None, str], _Candidate] = {}

    def candidate(stem: str, variant: str | None, ext: str) -> _Candidate:
        return by_key.setdefault((stem, variant, ext), _Candidate(stem, ext, variant))

    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ModelFileError(f"cannot list {folder}: {exc}") from exc
    for entry in entries:
        name = entry.name
        if m := _SINGLE_RE.match(name):
            candidate(m["stem"], m["variant"], m["ext"]).single = entry
        elif m := _SHARD_RE.match(name):
            shard = candidate(m["stem"], m["variant"], m["ext"])
            shard.shards[int(m["index"])] = (int(m["count"]), entry)
        elif (m := _INDEX_RE.match(name)) or (m := _INDEX_ALT_RE.match(name)):
            candidate(m["stem"], m["variant"], m["ext"]).index = entry

    # One candidate per (variant, ext): stems in WEIGHT_STEMS order.
    grouped: dict[tuple[str | None, str], _Candidate] = {}
    for stem in WEIGHT_STEMS:
        for (s, variant, ext), cand in by_key.items():
            if s == stem:
                grouped.setdefault((variant, ext), cand)
    return grouped


def _select(name: str, folder: Path, candidates: dict[tuple[str | None, str], _Candidate], *,
            variant: str | None, notes: list[str]) -> tuple[str | None, tuple[Path, ...]]:
    def pick(v: str | None) -> _Candidate | None:
        for ext in WEIGHT_EXTENSIONS:
            if (v, ext) in candidates:
                return candidates[(v, ext)]
        return None

    chosen = pick(variant)
    if chosen is None and variant is not None:
        chosen = pick(None)
        if chosen is not None:
            notes.append(f"component {name!r} has no {variant!r} variant: using its default weights")
    if chosen is None and variant is None:
        others = sorted({v for (v, _ext) in candidates if v is not None})
        if len(others) == 1:
            chosen = pick(others[0])
            notes.append(f"component {name!r} has only {others[0]!r} weights: using them")
        elif others:
            notes.append(f"component {name!r} has only variant weights {others}: pass variant= to pick one")
    if chosen is None:
        return None, ()
    return chosen.variant, _files_of(chosen, folder)


def _files_of(cand: _Candidate, folder: Path) -> tuple[Path, ...]:
    if cand.single is not None:
        return (cand.single,)
    if cand.index is not None:
        return _files_from_index(cand.index, folder)
    counts = {count for count, _path in cand.shards.values()}
    if len(counts) != 1:
        raise ModelFileError(f"{folder.name}: shards disagree on their count {sorted(counts)}")
    (count,) = counts
    if sorted(cand.shards) != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(cand.shards))
        raise ModelFileError(f"{folder.name}: incomplete shard set, missing {missing[:10]} of {count}")
    return tuple(cand.shards[i][1] for i in range(1, count + 1))


def _files_from_index(index_path: Path, folder: Path) -> tuple[Path, ...]:
    document = _read_json(index_path, limit=MAX_INDEX_BYTES)
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFileError(f"{index_path.name} has no weight_map object")
    shard_names: list[str] = []
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not _is_plain_name(shard):
            raise ModelFileError(
                f"{index_path.name}: tensor {tensor[:200]!r} maps to {str(shard)[:200]!r}, "
                "not a plain file name in the same folder")
        if shard not in shard_names:
            shard_names.append(shard)
    files = []
    for shard in sorted(shard_names):
        path = folder / shard
        if not path.is_file():
            raise ModelFileError(f"{index_path.name} names a missing shard {shard!r}")
        files.append(path)
    return tuple(files)


__all__ = ["DiffusersComponent", "DiffusersFolder", "read_diffusers_folder", "read_model_index", "WEIGHT_STEMS"]
