"""Import hashes that users' tools already computed, without reading model files.

PURE: no Django. Reads only small JSON files that tools write next to models:

- A1111/Forge `cache.json` (`"hashes"` -> SHA256, `"hashes-addnet"` -> full
  AutoV3, keyed by titles `checkpoint/<path under Stable-diffusion>`,
  `lora/<file stem>`, `textual_inversion/<file stem>`; A1111 >= 1.7 moved the
  cache to a diskcache folder `cache/` beside `models/`, read by a1111_diskcache.py
  without unpickling anything);
- SD Civitai Helper `<stem>.civitai.info` (Civitai's version JSON; `{}` = "not on Civitai");
- Stability Matrix `<stem>.cm-info.json` (ConnectedModelInfo);
- sd-civitai-browser-plus `<stem>.json` (`sha256`, `modelId`, maybe `modelVersionId`).

Hex values come back lower-case; CRC32 stays in Civitai's byte order (the way
Civitai prints it); `autov3` is 12 hex when the tool kept Civitai's form, 64
when it kept the whole addnet digest (compare on the first 12). These are
claims, not facts: the caller checks `size` against the file and re-hashes
before trusting them for anything that matters.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workers.sources.a1111_diskcache import SUBSECTIONS, is_a1111_cache_dir, read_a1111_diskcache

MAX_SIDECAR_BYTES = 10 * 1024 * 1024
# cache.json also holds A1111's "safetensors-metadata" section (tag frequency
# tables of every LoRA), so a real one is routinely far bigger than a sidecar.
MAX_A1111_CACHE_BYTES = 64 * 1024 * 1024

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# A1111 loads embeddings from images too.
EMBEDDING_EXTENSIONS = MODEL_EXTENSIONS + (".png", ".webp", ".jpg", ".jpeg", ".avif")

TOOL_A1111 = "a1111-cache"
TOOL_CIVITAI_HELPER = "civitai-helper"
TOOL_STABILITY_MATRIX = "stability-matrix"
TOOL_BROWSER_PLUS = "civitai-browser-plus"

CIVITAI_INFO_SUFFIX = ".civitai.info"
CM_INFO_SUFFIX = ".cm-info.json"

_HEX = re.compile(r"[0-9a-f]+")
_HASH_LENGTHS = {
    "sha256": (64,), "blake3": (64,), "autov1": (8,), "autov2": (10,),
    "autov3": (12, 64), "crc32": (8,),
}


class SidecarError(ValueError):
    """A sidecar file is unreadable, malformed or contradicts itself."""


@dataclass(frozen=True)
class ImportedHashes:
    """What one tool recorded about one model file.

    `size` is the model file's size when it exists (else the size the tool
    recorded, else None); `mtime` is the model's mtime the tool saw when it
    hashed (A1111 only; a newer file mtime means the hash may be stale).
    """

    model_path: Path
    tool: str
    size: int | None = None
    sha256: str | None = None
    autov2: str | None = None
    autov3: str | None = None
    blake3: str | None = None
    crc32: str | None = None
    autov1: str | None = None
    civitai_model_id: int | None = None
    civitai_version_id: int | None = None
    mtime: float | None = None

    @property
    def has_hashes(self) -> bool:
        return any((self.sha256, self.autov2, self.autov3, self.blake3, self.crc32, self.autov1))


# --- small strict helpers ------------------------------------------------------

def _load_json(path: Path, *, max_bytes: int) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise SidecarError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SidecarError(f"{path.name} is larger than {max_bytes} bytes: not a sidecar this reads")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SidecarError(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise SidecarError(f"{path.name} nests JSON too deeply") from None


def _hex(value: Any, *, field: str, kind: str) -> str | None:
    """A hash field: None or "" -> None; anything else must be hex of the kind's length."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SidecarError(f"{field} should be a hex string, not {type(value).__name__}")
    v = value.strip().lower()
    if not _HEX.fullmatch(v) or len(v) not in _HASH_LENGTHS[kind]:
        lengths = " or ".join(str(n) for n in _HASH_LENGTHS[kind])
        raise SidecarError(f"{field} should be {lengths} hex characters, got {value[:80]!r}")
    return v


def _int_id(value: Any, *, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SidecarError(f"{field} should be a number, not a boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())  # some tools write ids as strings
    else:
        raise SidecarError(f"{field} should be a numeric id, got {value!r:.80}")
    if result <= 0:
        raise SidecarError(f"{field} should be a positive id, got {result}")
    return result


def _object(value: Any, *, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SidecarError(f"{field} should be a JSON object, not {type(value).__name__}")
    return value


def _file_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if os.path.isfile(path) else None


def _with_autov2(found: ImportedHashes, *, where: str) -> ImportedHashes:
    """AutoV2 is SHA256[:10]: fill it in, and refuse a sidecar where they disagree."""
    if found.sha256 is None:
        return found
    if found.autov2 is None:
        return replace(found, autov2=found.sha256[:10])
    if found.autov2 != found.sha256[:10]:
        raise SidecarError(f"{where}: AutoV2 {found.autov2} is not the start of SHA256 {found.sha256}")
    return found


def _stem_of(sidecar: Path, suffix: str) -> str:
    name = sidecar.name
    if not name.lower().endswith(suffix.lower()):
        raise SidecarError(f"{name} does not end with {suffix}")
    stem = name[: -len(suffix)]
    if not stem:
        raise SidecarError(f"{name} names no model")
    return stem


def _model_beside(sidecar: Path, stem: str, *, prefer_names: tuple[str, ...] = ()) -> Path | None:
    """The existing model file `<stem><ext>` next to the sidecar, preferring a name the tool recorded."""
    folder = sidecar.parent
    for name in prefer_names:
        if name and Path(name).stem == stem and Path(name).suffix.lower() in MODEL_EXTENSIONS:
            p = folder / (stem + Path(name).suffix)
            if p.is_file():
                return p
    for ext in MODEL_EXTENSIONS:
        for candidate in (folder / (stem + ext), folder / (stem + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def _guess_model_path(sidecar: Path, stem: str, remote_name: str | None) -> Path:
    ext = Path(remote_name).suffix if remote_name else ""
    return sidecar.parent / (stem + (ext if ext.lower() in MODEL_EXTENSIONS else ".safetensors"))


# --- Civitai's hashes object (Civitai Helper, Stability Matrix) ----------------

def _civitai_hashes(hashes: Any, *, field: str) -> dict[str, str | None]:
    hashes = _object(hashes, field=field)
    by_key = {str(k).lower(): v for k, v in hashes.items()}
    return {kind: _hex(by_key.get(kind), field=f"{field}.{kind}", kind=kind) for kind in _HASH_LENGTHS}


# --- SD Civitai Helper ---------------------------------------------------------

def parse_civitai_info(info_path: Path) -> ImportedHashes | None:
    """`<stem>.civitai.info`; None when it is `{}` (Civitai Helper's "not on Civitai")."""
    info_path = Path(info_path)
    stem = _stem_of(info_path, CIVITAI_INFO_SUFFIX)
    data = _object(_load_json(info_path, max_bytes=MAX_SIDECAR_BYTES), field=info_path.name)
    if not data:
        return None
    where = info_path.name
    version_id = _int_id(data.get("id"), field=f"{where}: id")
    model_id = _int_id(data.get("modelId"), field=f"{where}: modelId")
    files = data.get("files")
    if files is None:
        files = []
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise SidecarError(f"{where}: files should be a list of objects")
    names = tuple(f["name"] for f in files if isinstance(f.get("name"), str))
    model = _model_beside(info_path, stem, prefer_names=names)
    size = _file_size(model) if model else None
    chosen = _pick_civitai_file(files, model=model, size=size, where=where)
    model_path = model or _guess_model_path(info_path, stem, chosen.get("name") if chosen else None)
    hashes = _civitai_hashes(chosen.get("hashes") if chosen else None, field=f"{where}: hashes")
    if size is None and chosen:
        size = _size_from_kb(chosen.get("sizeKB"), where=where)
    found = ImportedHashes(
        model_path=model_path, tool=TOOL_CIVITAI_HELPER, size=size,
        civitai_model_id=model_id, civitai_version_id=version_id, **hashes,
    )
    return _with_autov2(found, where=where)


def _size_from_kb(size_kb: Any, *, where: str) -> int | None:
    if size_kb is None:
        return None
    if isinstance(size_kb, bool) or not isinstance(size_kb, (int, float)) or not math.isfinite(size_kb) or size_kb < 0:
        raise SidecarError(f"{where}: sizeKB should be a non-negative number, got {size_kb!r:.40}")
    return round(size_kb * 1024)


def _pick_civitai_file(files: list[dict], *, model: Path | None, size: int | None, where: str) -> dict | None:
    """The files[] entry describing our model: same name, else same size, else the primary."""
    if not files:
        return None

    def size_matches(f: dict) -> bool | None:
        claimed = _size_from_kb(f.get("sizeKB"), where=where)
        if claimed is None or size is None:
            return None
        # sizeKB is bytes/1024 as a float: exact for any real size, allow rounding.
        return abs(claimed - size) <= 1

    by_name = [f for f in files if model and f.get("name") == model.name]
    by_name = by_name or [f for f in files if model and str(f.get("name", "")).lower() == model.name.lower()]
    by_size = [f for f in files if size_matches(f)]
    primary = [f for f in files if f.get("primary") is True]
    for group in (by_name, by_size, primary, files if len(files) == 1 else []):
        for f in group:
            if size_matches(f) is False:
                continue
            return f
    if size is not None:
        raise SidecarError(
            f"{where}: none of the files it describes has the size of {model.name} ({size} bytes); "
            "it belongs to another file"
        )
    return None


# --- Stability Matrix ------------------------------------------------------------

def parse_cm_info(info_path: Path) -> ImportedHashes:
    """`<stem>.cm-info.json` (Stability Matrix's ConnectedModelInfo)."""
    info_path = Path(info_path)
    stem = _stem_of(info_path, CM_INFO_SUFFIX)
    where = info_path.name
    data = _object(_load_json(info_path, max_bytes=MAX_SIDECAR_BYTES), field=where)
    remote_name = data.get("RemoteFileName")
    if remote_name is not None and not isinstance(remote_name, str):
        raise SidecarError(f"{where}: RemoteFileName should be a string")
    model = _model_beside(info_path, stem, prefer_names=(remote_name,) if remote_name else ())
    found = ImportedHashes(
        model_path=model or _guess_model_path(info_path, stem, remote_name),
        tool=TOOL_STABILITY_MATRIX,
        size=_file_size(model) if model else None,
        civitai_model_id=_int_id(data.get("ModelId"), field=f"{where}: ModelId"),
        civitai_version_id=_int_id(data.get("VersionId"), field=f"{where}: VersionId"),
        **_civitai_hashes(data.get("Hashes"), field=f"{where}: Hashes"),
    )
    return _with_autov2(found, where=where)


# --- sd-civitai-browser-plus -------------------------------------------------------

def parse_browser_plus_json(json_path: Path) -> ImportedHashes | None:
    """`<stem>.json` written by sd-civitai-browser-plus; None if it holds neither a hash nor an id
    (A1111 writes the same file name for its user metadata: description, activation text...)."""
    json_path = Path(json_path)
    where = json_path.name
    stem = _stem_of(json_path, ".json")
    data = _object(_load_json(json_path, max_bytes=MAX_SIDECAR_BYTES), field=where)
    sha256 = _hex(data.get("sha256"), field=f"{where}: sha256", kind="sha256")
    model_id = _int_id(data.get("modelId"), field=f"{where}: modelId")
    version_id = _int_id(data.get("modelVersionId"), field=f"{where}: modelVersionId")
    if sha256 is None and model_id is None and version_id is None:
        return None
    model = _model_beside(json_path, stem)
    found = ImportedHashes(
        model_path=model or _guess_model_path(json_path, stem, None),
        tool=TOOL_BROWSER_PLUS,
        size=_file_size(model) if model else None,
        sha256=sha256,
        civitai_model_id=model_id,
        civitai_version_id=version_id,
    )
    return _with_autov2(found, where=where)


# --- A1111 / Forge cache.json ------------------------------------------------------

def parse_a1111_cache(
    cache_json: Path | dict,
    *,
    models_dir: Path,
    embeddings_dir: Path | None = None,
    problems: list[str] | None = None,
) -> list[ImportedHashes]:
    """Hashes in an A1111/Forge `cache.json` (a path, or its already-parsed content).

    `models_dir` is the webui's `models/` folder; `embeddings_dir` defaults to
    the `embeddings/` folder beside it. Entries that name no file we can find
    (a LoRA stem that matches no file or several, the bare `vae` title) are
    skipped and described in `problems` when a list is given.
    """
    if isinstance(cache_json, dict):
        data, where = cache_json, "cache.json"
    else:
        cache_json = Path(cache_json)
        where = cache_json.name
        data = _object(_load_json(cache_json, max_bytes=MAX_A1111_CACHE_BYTES), field=where)
    models_dir = Path(models_dir)
    embeddings_dir = Path(embeddings_dir) if embeddings_dir is not None else models_dir.parent / "embeddings"
    notes: list[str] = problems if problems is not None else []
    resolver = _A1111Resolver(models_dir=models_dir, embeddings_dir=embeddings_dir)

    results: list[ImportedHashes] = []
    for section, field_name in (("hashes", "sha256"), ("hashes-addnet", "autov3")):
        entries = _object(data.get(section), field=f"{where}: {section}")
        for title, entry in entries.items():
            entry = _object(entry, field=f"{where}: {section}[{title!r}]")
            value = _hex(entry.get("sha256"), field=f"{where}: {section}[{title!r}].sha256",
                         kind="sha256")
            mtime = entry.get("mtime")
            if mtime is not None and (isinstance(mtime, bool) or not isinstance(mtime, (int, float))
                                      or not math.isfinite(mtime)):
                raise SidecarError(f"{where}: {section}[{title!r}].mtime should be a number")
            if value is None:
                continue
            path = resolver.resolve(title, notes=notes)
            if path is None:
                continue
            found = ImportedHashes(
                model_path=path, tool=TOOL_A1111, size=_file_size(path),
                mtime=float(mtime) if mtime is not None else None, **{field_name: value},
            )
            results.append(_with_autov2(found, where=where))
    return results


class _A1111Resolver:
    """Turns A1111 cache titles into paths the way A1111 built them."""

    def __init__(self, *, models_dir: Path, embeddings_dir: Path) -> None:
        self.models_dir = models_dir
        self.embeddings_dir = embeddings_dir
        self._stems: dict[str, dict[str, list[Path]]] = {}

    def resolve(self, title: str, *, notes: list[str]) -> Path | None:
        kind, sep, rest = title.partition("/")
        rest = rest.replace("\\", "/")  # titles written on Windows
        if not sep or not rest:
            notes.append(f"{title!r}: names no file (A1111 keeps one 'vae' entry for the last VAE it loaded)")
            return None
        if kind == "checkpoint":
            return self._relative(self.models_dir / "Stable-diffusion", rest, title)
        if kind == "vae":
            return self._relative(self.models_dir / "VAE", rest, title)
        if kind == "lora":
            return self._by_stem("lora", (self.models_dir / "Lora", self.models_dir / "LyCORIS"),
                                 rest, MODEL_EXTENSIONS, title, notes)
        if kind == "textual_inversion":
            return self._by_stem("embeddings", (self.embeddings_dir,), rest, EMBEDDING_EXTENSIONS, title, notes)
        notes.append(f"{title!r}: unknown kind of entry {kind!r}, skipped")
        return None

    @staticmethod
    def _relative(base: Path, rest: str, title: str) -> Path:
        parts = [p for p in rest.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or rest.startswith("/") or re.match(r"^[A-Za-z]:", rest):
            # A1111 writes paths relative to the folder (or a bare file name):
            # anything climbing out was not written by it.
            raise SidecarError(f"cache.json title {title!r} points outside {base.name}/")
        return base.joinpath(*parts)

    def _by_stem(self, key: str, folders: tuple[Path, ...], stem: str, exts: tuple[str, ...],
                 title: str, notes: list[str]) -> Path | None:
        index = self._stems.get(key)
        if index is None:
            index = {}
            for folder in folders:
                for path in _walk_files(folder):
                    if path.suffix.lower() in exts:
                        index.setdefault(path.stem, []).append(path)
            self._stems[key] = index
        matches = index.get(stem, [])
        if len(matches) == 1:
            return matches[0]
        if not matches:
            notes.append(f"{title!r}: no file named {stem}.* under {', '.join(str(f) for f in folders)}")
        else:
            notes.append(f"{title!r}: {len(matches)} files share that name; A1111 could not tell them apart either")
        return None


# --- walking a folder ------------------------------------------------------------------

def _walk_files(root: Path):
    """Regular files under root, sorted, without following directory symlinks."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def find_sidecar_hashes(root: Path) -> tuple[list[ImportedHashes], list[tuple[Path, str]]]:
    """Every tool record under `root`, and (path, error) for each sidecar that could not be used.

    Does not follow directory symlinks, and skips symlinked sidecars whose
    target lies outside `root`. Files over MAX_SIDECAR_BYTES are not sidecars.
    A `cache.json` counts when a `models/` folder sits beside it (a webui root).
    """
    root = Path(root)
    real_root = root.resolve()
    results: list[ImportedHashes] = []
    errors: list[tuple[Path, str]] = []
    cache_dirs: list[Path] = []
    for path in _walk_files(root):
        name = path.name.lower()
        if name == "cache.db" and not path.is_symlink() and path.parent.name in SUBSECTIONS \
                and is_a1111_cache_dir(path.parent.parent) and path.parent.parent not in cache_dirs:
            cache_dirs.append(path.parent.parent)
            continue
        is_cache = name == "cache.json" and (path.parent / "models").is_dir()
        if not (is_cache or name.endswith((CIVITAI_INFO_SUFFIX, ".json"))):
            continue
        try:
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                continue
            st = path.stat()
        except (OSError, RuntimeError):  # RuntimeError: symlink loop on older Pythons
            continue
        limit = MAX_A1111_CACHE_BYTES if is_cache else MAX_SIDECAR_BYTES
        if not os.path.isfile(path) or st.st_size > limit:
            continue
        try:
            if is_cache:
                notes: list[str] = []
                found = parse_a1111_cache(path, models_dir=path.parent / "models", problems=notes)
                results.extend(found)
                errors.extend((path, note) for note in notes)
            elif name.endswith(CIVITAI_INFO_SUFFIX):
                _append(results, parse_civitai_info(path))
            elif name.endswith(CM_INFO_SUFFIX):
                _append(results, parse_cm_info(path))
            elif _model_beside(path, path.name[: -len(".json")]) is not None:
                # A plain `<stem>.json` is only a sidecar when `<stem>.<model ext>` is beside it.
                _append(results, parse_browser_plus_json(path))
        except SidecarError as exc:
            errors.append((path, str(exc)))
        except OSError as exc:
            errors.append((path, f"cannot read: {exc.strerror or exc}"))
    for cache_dir in cache_dirs:
        notes = []
        try:
            data = read_a1111_diskcache(cache_dir, problems=notes)
            results.extend(parse_a1111_cache(data, models_dir=cache_dir.parent / "models", problems=notes))
        except SidecarError as exc:
            errors.append((cache_dir, str(exc)))
        except OSError as exc:
            errors.append((cache_dir, f"cannot read: {exc.strerror or exc}"))
        errors.extend((cache_dir, note) for note in notes)
    return results, errors


def _append(results: list[ImportedHashes], found: ImportedHashes | None) -> None:
    if found is not None and (found.has_hashes or found.civitai_version_id or found.civitai_model_id):
        results.append(found)
