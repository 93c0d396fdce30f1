"""Path policy: what may be registered in place, and how uploaded names are cleaned.

Every registered path and every uploaded name is hostile until proven
otherwise: paths are resolved (symlinks followed) and must land inside one of
the owner's model roots (`model_roots_for`); names lose directories and
control characters.
"""
from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

from django.conf import settings
from django.db.models import Q


class PathRefused(Exception):
    """A path may not be registered; the message says why in words a user understands."""


# How to switch registering in place on: `make run`, the CLI and the pages all say it in these words.
ROOTS_EXAMPLE = "MODELXREF_MODEL_ROOTS=/path/to/models make run"
NO_ROOTS = ("no model roots are configured, so registering files in place is off: start ModelXRef with the "
            f"folders it may read, e.g. `{ROOTS_EXAMPLE}` (several folders: separate them with ':')")


def model_roots() -> list[Path]:
    """MODELXREF_MODEL_ROOTS: every folder the server may read for registration, for anyone."""
    return [Path(r).resolve() for r in settings.MODEL_ROOTS]


def root_problem(root: Path) -> str:
    """Why nothing under a configured root can be registered, or '' when it is usable."""
    if not root.exists():
        return "it does not exist"
    if not root.is_dir():
        return "it is not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return "ModelXRef may not read it"
    return ""


def normalise_root(raw: str) -> Path:
    """A ModelRoot path as stored: absolute and symlink-resolved (the folder may not exist yet)."""
    text = str(raw).strip()
    if not text or "\x00" in text:
        raise ValueError("give an absolute folder path")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{printable(text)} is not an absolute path")
    return path.resolve()


def model_roots_for(user) -> list[Path]:
    """The folders `user` may register under: the one rule the CLI, API, web pages and workers ask.

    No ModelRoot rows at all (a single-user install): every env root, for every user.
    With rows: the rows that name the user or one of their groups, and only while they lie
    inside the env roots (the operator's outer bound, which may have shrunk since);
    superusers, who could grant themselves any row, keep every env root.
    """
    from models_catalog.models import ModelRoot

    server = model_roots()
    if user is None or not user.is_active or not server:
        return []
    if user.is_superuser or not ModelRoot.objects.exists():
        return server
    rows = (ModelRoot.objects.filter(Q(users=user) | Q(groups__in=user.groups.all()))
            .distinct().values_list("path", flat=True))
    mine = sorted({Path(p).resolve() for p in rows})
    return [p for p in mine if any(p.is_relative_to(root) for root in server)]


def printable(text: str) -> str:
    """A path or name as it can be shown: control characters made visible."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else f"\\x{ord(ch):02x}" for ch in str(text))


def resolve_under_roots(raw: str | os.PathLike, *, roots: list[Path] | None = None) -> Path:
    """Resolve `raw` and return it if it lies inside one of the roots; refuse otherwise."""
    roots = model_roots() if roots is None else roots
    if not roots:
        if model_roots():
            raise PathRefused("no model root is assigned to you: staff can give you one in the admin (Model roots)")
        raise PathRefused(NO_ROOTS)
    if "\x00" in str(raw):
        raise PathRefused("the path contains a NUL byte")
    try:
        resolved = Path(raw).expanduser().resolve(strict=True)
    except FileNotFoundError:
        raise PathRefused(f"{printable(raw)}: no such file or folder") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        raise PathRefused(f"{printable(raw)}: cannot resolve the path ({exc})") from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise PathRefused(f"{printable(raw)} resolves to {printable(resolved)}, which is outside the model roots ({shown})")
    return resolved


def refusal_reason(raw: str, reason: str, *, user) -> str:
    """A refusal as the web and the API may tell it to a signed-in user.

    For a path that lies outside every one of the user's model roots even before symlinks are
    followed, say only that: whether it exists, or where it points, is none of the caller's business."""
    roots = model_roots_for(user)
    lexical = os.path.normpath(os.path.abspath(os.path.expanduser(raw))) if raw and "\x00" not in raw else ""
    if roots and lexical and not any(lexical == str(r) or lexical.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots):
        return f"{printable(raw)} is outside the model roots ({', '.join(str(r) for r in roots)})"
    return reason


def describe_special(mode: int) -> str | None:
    """Why a file of this mode cannot be hashed, or None for regular files and folders."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"not a regular file: it is {what}"
    return "not a regular file"


MAX_NAME_LENGTH = 200


def clean_upload_name(raw: str) -> str:
    """Keep only the last path component, drop control characters and leading dots."""
    name = str(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = unicodedata.normalize("NFC", name).strip().lstrip(".").strip()
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME_LENGTH - len(ext) - 1] + dot + ext) if dot and len(ext) < 16 else name[:MAX_NAME_LENGTH]
    return name or "upload.bin"
