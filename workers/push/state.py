"""What the server has accepted: the push state file, rewritten atomically, one run per file (PURE).

It remembers, per path, the identity (device, inode, size, mtime_ns) and
sha256 the server ACCEPTED, so a re-run sends only new or changed files and an
interrupted run continues where it stopped. A diffusers folder is remembered by
a digest of its members' identities (collect.folder_members_identity).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workers.hashing import FileIdentity
from workers.push.report import PushUsageError

STATE_VERSION = 1


def _account(token: str) -> str:
    # The state never holds the token; a short digest tells accounts apart.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


class PushState:
    """{"version", "server", "targets": {"<host> <account>": {"files": {path: entry}}}}.

    entry = {"device", "inode", "size", "mtime_ns", "sha256", "analysed", "pushed_at"} for a file,
    {"kind": "folder", "members_identity", "folder_digest", "analysed", "pushed_at"} for a diffusers folder.
    Keyed by host and account because the server stores by (owner, host, path):
    a file pushed under another --host or token has not been pushed for this one.
    """

    def __init__(self, path: Path, *, server: str, host: str, token: str, warn: Callable[[str], None]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"version": STATE_VERSION, "server": server, "targets": {}}
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise PushUsageError(f"{path}: cannot read the push state: {exc.strerror or exc}") from exc
        if raw is not None:
            try:
                loaded = json.loads(raw)
                if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
                    raise ValueError(f"not a version {STATE_VERSION} push state")
                if not isinstance(loaded.get("targets"), dict):
                    raise ValueError("no 'targets' object")
                self.doc = loaded
            except ValueError as exc:
                # Forgetting costs only a re-send: the server stores idempotently.
                warn(f"{path}: unreadable push state ({exc}); every file will be sent again")
        target = self.doc["targets"].setdefault(f"{host} {_account(token)}", {})
        if not isinstance(target.get("files"), dict):
            target["files"] = {}
        self.files: dict[str, Any] = target["files"]

    def is_pushed(self, path: str, identity: FileIdentity, *, need_analysis: bool) -> bool:
        entry = self.files.get(path)
        if not isinstance(entry, dict):
            return False
        same = all(entry.get(k) == getattr(identity, k) for k in ("device", "inode", "size", "mtime_ns"))
        return same and (entry.get("analysed") is True or not need_analysis)

    def record(self, path: str, identity: FileIdentity, *, sha256: str, analysed: bool) -> None:
        self.files[path] = {
            "device": identity.device, "inode": identity.inode, "size": identity.size,
            "mtime_ns": identity.mtime_ns, "sha256": sha256, "analysed": analysed, "pushed_at": time.time(),
        }

    def is_folder_pushed(self, path: str, members_identity: str, *, need_analysis: bool) -> bool:
        entry = self.files.get(path)
        if not isinstance(entry, dict) or entry.get("kind") != "folder":
            return False
        return entry.get("members_identity") == members_identity and (entry.get("analysed") is True or not need_analysis)

    def record_folder(self, path: str, *, members_identity: str, folder_digest: str, analysed: bool) -> None:
        self.files[path] = {"kind": "folder", "members_identity": members_identity, "folder_digest": folder_digest,
                            "analysed": analysed, "pushed_at": time.time()}
        # Older runs pushed a folder's weight files one by one; the folder record replaces those entries.
        prefix = path.rstrip(os.sep) + os.sep
        for stale in [p for p in self.files if p.startswith(prefix)]:
            del self.files[stale]

    def forget(self, path: str) -> None:
        self.files.pop(path, None)

    def save(self) -> None:
        """Write to a temporary file beside the state, fsync, rename: never a half-written state."""
        data = json.dumps(self.doc, indent=1, sort_keys=True).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise PushUsageError(f"{self.path}: cannot write the push state: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def state_lock(state_path: Path) -> Iterator[None]:
    """One run per state file: two runs would overwrite each other's progress."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, last writer wins
        yield
        return
    lock_path = state_path.with_name(state_path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PushUsageError(f"{lock_path}: cannot create the lock file: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PushUsageError(f"another push is already using {state_path}") from None
        yield
    finally:
        os.close(fd)
