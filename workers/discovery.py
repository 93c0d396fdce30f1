"""Which files in a folder are model files (PURE). Decided by content; a model-like
name is enough to be *taken* (so a PNG named .pt is reported, not skipped), never
enough to be trusted."""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from workers.hashing import is_diffusers_folder
from workers.modelfiles.sniff import sniff
from workers.modelfiles.types import ModelFileError

MODEL_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".pkl", ".gguf", ".sft", ".npy", ".npz"})
MODEL_FORMATS = frozenset({"safetensors", "torch-zip", "torch-legacy", "torch-tar", "pickle", "npy", "npz", "gguf", "7z"})


def is_model_candidate(path: Path) -> bool:
    if path.suffix.lower() in MODEL_SUFFIXES:
        return True
    try:
        return sniff(path) in MODEL_FORMATS
    except (ModelFileError, OSError):
        return False


def iter_model_units(
    folder: Path,
    *,
    resolve: Callable[[Path], Path] = lambda p: p.resolve(strict=True),
    on_skip: Callable[[Path, str], None] = lambda p, why: None,
) -> Iterator[tuple[Path, os.stat_result]]:
    """Yield (path, stat) of model files and diffusers folders under `folder`.

    `resolve` maps each file to the path to use, raising to refuse it (the
    app passes its model-roots check); `on_skip` hears about refusals.
    Symlinked folders are not followed; hidden folders (.cache, .git) are tool state.
    """
    if is_diffusers_folder(folder):
        yield folder, folder.stat()
        return
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith("."):
                continue
            if sub.is_symlink():
                on_skip(sub, "symlinked folders are not followed; register their target directly")
                continue
            if is_diffusers_folder(sub):
                yield sub, sub.stat()
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            entry = here / name
            try:
                target = resolve(entry)
                st = target.stat()
            except OSError as exc:
                on_skip(entry, f"cannot stat: {exc.strerror or exc}")
                continue
            except Exception as exc:  # the caller's refusal (e.g. outside the model roots)
                on_skip(entry, str(exc))
                continue
            # Special files met while walking are skipped silently: only a path
            # named explicitly gets a stored error.
            if stat.S_ISREG(st.st_mode) and st.st_size > 0 and is_model_candidate(target):
                yield target, st
