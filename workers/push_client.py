"""Push hashes (never file contents) from a machine that holds model files to a ModelXRef server (PURE).

    python -m workers.push_client DIR... --server URL --token T [--host NAME]
        [--state FILE] [--cache FILE] [--batch 200] [--no-analyse]

Needs only requirements.txt: no database, no Django. Files are found by
content (workers.discovery), hashed by the same engine as the server's
workers (with the same identity-keyed HashCache), analysed without executing
anything (workers.modelfiles.analyse), and sent in batches.

Resuming: a JSON state file remembers, per path, the identity (device, inode,
size, mtime_ns) and sha256 the server ACCEPTED. It is rewritten atomically
after each accepted batch, so a re-run sends only new or changed files and an
interrupted run continues where it stopped. Sending a record twice is
harmless: the server stores by (owner, host, path).

A diffusers folder is pushed as ONE folder record ("kind": "folder", its
FolderHashes with the digest and every weight file), as the server stores a
registered folder; the state remembers it by a digest of its members'
identities, so a changed, added or removed weight file sends it again.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from workers.discovery import iter_model_units
from workers.hash_cache import HashCache, HashCacheError, hash_file_cached_with_identity
from workers.hashing import (
    WEIGHT_SUFFIXES,
    FileIdentity,
    HashingError,
    file_identity,
    hash_folder,
)
from workers.sources.http import RetryPolicy, make_session, parse_retry_after

PUSH_ENDPOINT = "/api/v1/files/push/"
MAX_BATCH = 500  # the server refuses more records per request
DEFAULT_BATCH = 200
# Django refuses bodies above DATA_UPLOAD_MAX_MEMORY_SIZE (10 MiB here); a
# batch of hostile pickles with 200 findings each could get close.
MAX_BODY_BYTES = 4 * 1024 * 1024
STATE_VERSION = 1
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # the server stores a whole batch in one request
DEFAULT_RETRY = RetryPolicy(base=1.0, cap=30.0, max_attempts=6, max_wait=300.0)


class PushError(Exception):
    """The push could not go on. `report` holds what was done before it stopped."""

    def __init__(self, message: str, report: PushReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class PushUsageError(PushError):
    """Bad arguments: server URL, batch size, unusable state or cache file."""


class PushAuthError(PushError):
    """The server refused the token (401/403)."""


class PushRefusedError(PushError):
    """The server refused a request for good (400 or another final 4xx)."""


class PushUnavailableError(PushError):
    """The server could not be reached or kept failing after the retries."""


@dataclass
class PushReport:
    sent: int = 0  # records the server answered for (accepted or refused one by one)
    skipped_unchanged: int = 0  # unchanged since the server last accepted them
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    requests: int = 0  # HTTP requests made, retries included
    passed_over: list[tuple[str, str]] = field(default_factory=list)  # discovery's notes: not followed, unstat-able

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------
# Defaults


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "modelxref"


def default_cache_path() -> Path:
    return Path(os.environ.get("MODELXREF_PUSH_CACHE") or _cache_dir() / "hash-cache.sqlite3")


def default_state_path(server: str) -> Path:
    netloc = urlsplit(server).netloc or "server"
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in netloc)
    return _cache_dir() / f"push-state-{safe}.json"


def normalise_server(server: str) -> str:
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PushUsageError(f"--server must be an http(s) URL such as https://modelxref.example.org, got {server!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


# --------------------------------------------------------------------------
# State: what the server has accepted


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
def _state_lock(state_path: Path) -> Iterator[None]:
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


# --------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class _Unit:
    path: str  # absolute
    size: int  # from the walk, for the progress bar only
    is_folder: bool = False  # a diffusers folder, pushed as one record


def _folder_weight_files(folder: Path) -> list[Path]:
    """A diffusers folder's weight files, as the hash engine's folder hash lists them."""
    def fail(exc: OSError) -> None:
        raise HashingError(f"{folder}: cannot list {exc.filename}: {exc.strerror or exc}")

    found = []
    for root, _dirs, names in os.walk(folder, onerror=fail):
        for name in names:
            if name.endswith(WEIGHT_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found)


def _regular_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def collect_units(paths: Iterable[str | os.PathLike[str]], *, report: PushReport) -> list[_Unit]:
    """Files to push, in a stable order, without duplicates.

    Inside folders, special files (FIFOs, sockets) are skipped silently by
    discovery; a path named explicitly is kept, so hashing reports it.
    """
    units: dict[str, _Unit] = {}

    def add(path: Path, size: int | None, *, is_folder: bool = False) -> None:
        units.setdefault(str(path), _Unit(str(path), size or 0, is_folder))

    def add_folder(folder: Path) -> None:
        try:
            members = _folder_weight_files(folder)
        except HashingError as exc:
            report.failed.append((str(folder), str(exc)))
            return
        # Special files among a folder's members are skipped, as discovery does.
        regular = [(m, _regular_size(m)) for m in members]
        regular = [(m, s) for m, s in regular if s is not None]
        if not regular:
            report.failed.append((str(folder), f"diffusers folder without weight files ({', '.join(WEIGHT_SUFFIXES)})"))
            return
        add(folder, sum(s for _m, s in regular), is_folder=True)

    for raw in paths:
        given = Path(os.fspath(raw)).expanduser()
        target = given.resolve()
        try:
            st = target.stat()
        except FileNotFoundError:
            report.failed.append((str(given), "no such file or folder"))
            continue
        except OSError as exc:
            report.failed.append((str(given), f"cannot stat: {exc.strerror or exc}"))
            continue
        if not stat.S_ISDIR(st.st_mode):
            add(target, st.st_size if stat.S_ISREG(st.st_mode) else 0)
            continue
        try:
            for unit, unit_st in iter_model_units(target, on_skip=lambda p, why: report.passed_over.append((str(p), why))):
                if stat.S_ISDIR(unit_st.st_mode):
                    add_folder(unit)
                else:
                    add(unit, unit_st.st_size)
        except OSError as exc:  # a folder vanishing under the walk
            report.failed.append((str(given), f"cannot walk: {exc.strerror or exc}"))
    return list(units.values())


# --------------------------------------------------------------------------
# Hashing and analysis


def _analysis_fields(path: str, *, analyse: bool, member_paths: list[str] | None = None) -> dict[str, Any]:
    from workers.modelfiles.analyse import analyse_path

    if not analyse:
        return {"format": _sniff_quietly(path), "fingerprint": None, "safety": None, "architecture": None}
    try:
        result = analyse_path(Path(path), member_paths=member_paths)
    except Exception as exc:  # a reader bug must not stop the push; the server is told why
        finding = {"severity": "unreadable", "what": "analysis", "where": "", "why": f"internal error: {exc}"}
        return {"format": _sniff_quietly(path), "fingerprint": None,
                "safety": {"verdict": "unreadable", "findings": [finding]}, "architecture": None}
    return {"format": result.format, "fingerprint": result.fingerprint,
            "safety": {"verdict": result.verdict, "findings": result.findings}, "architecture": result.architecture}


def _sniff_quietly(path: str) -> str:
    from workers.modelfiles.sniff import sniff

    try:
        return sniff(path)
    except Exception:  # noqa: BLE001 - the format is informative; the hashes are the record
        return "unknown"


# --------------------------------------------------------------------------
# Talking to the server


@dataclass
class _Pending:
    path: str
    analysed: bool
    record: dict[str, Any]
    encoded_size: int
    identity: FileIdentity | None = None  # a file
    sha256: str = ""
    members_identity: str | None = None  # a diffusers folder
    folder_digest: str = ""

    def remember(self, state: PushState) -> None:
        if self.members_identity is not None:
            state.record_folder(self.path, members_identity=self.members_identity, folder_digest=self.folder_digest,
                                analysed=self.analysed)
        else:
            assert self.identity is not None
            state.record(self.path, self.identity, sha256=self.sha256, analysed=self.analysed)


class _Sender:
    def __init__(self, *, url: str, token: str, host: str, session: requests.Session, retry: RetryPolicy,
                 sleep: Callable[[float], None], report: PushReport, timeout: tuple[float, float]) -> None:
        self.url, self.token, self.host = url, token, host
        self.session, self.retry, self.sleep, self.report = session, retry, sleep, report
        self.timeout = timeout

    def post(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"host": self.host, "files": records}, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            self.report.requests += 1
            retry_after = None
            try:
                response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
            except requests.exceptions.SSLError as exc:  # retrying cannot fix a certificate
                raise PushUnavailableError(f"TLS failed for {self.url}: {_short(exc)}", self.report) from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"cannot reach {self.url}: {_short(exc)}"
            except requests.RequestException as exc:
                raise PushUnavailableError(f"request to {self.url} failed: {_short(exc)}", self.report) from exc
            else:
                status = response.status_code
                if status == 200:
                    return self._answer(response, len(records))
                if status in (401, 403):
                    raise PushAuthError(
                        f"the server refused the token (HTTP {status}{_detail_suffix(response)})", self.report)
                if status == 429 or status >= 500:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    problem = f"the server answered HTTP {status}{_detail_suffix(response)}"
                else:
                    raise PushRefusedError(
                        f"the server refused the request (HTTP {status}): {_error_message(response)}", self.report)
            if attempt >= self.retry.max_attempts:
                raise PushUnavailableError(f"{problem}; gave up after {attempt} attempts", self.report)
            wait = self.retry.delay(attempt, retry_after)
            if wait > self.retry.max_wait:
                raise PushUnavailableError(f"{problem}; it asked to wait {wait:.0f} s, more than {self.retry.max_wait:.0f} s",
                                           self.report)
            self.sleep(wait)

    def _answer(self, response: requests.Response, count: int) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError:
            raise PushUnavailableError(f"{self.url} answered 200 with something that is not JSON; "
                                       "is --server the ModelXRef site?", self.report) from None
        counts_ok = isinstance(doc, dict) and all(
            isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool) for k in ("created", "updated", "unchanged"))
        errors = doc.get("errors", []) if isinstance(doc, dict) else None
        if not counts_ok or not isinstance(errors, list) or not all(
            isinstance(e, dict) and isinstance(e.get("index"), int) and 0 <= e["index"] < count for e in errors
        ):
            raise PushUnavailableError(f"{self.url} answered 200 without the push result it should send", self.report)
        return doc


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _error_message(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
            if err.get("detail"):
                message += f" ({_short(json.dumps(err['detail']) if not isinstance(err['detail'], str) else err['detail'])})"
            return message
        if isinstance(doc.get("detail"), str):  # DRF's own error form
            return doc["detail"]
    text = (response.text or "").strip()
    return _short(text) if text and len(text) < 500 else f"no readable message ({len(response.content)} bytes)"


def _detail_suffix(response: requests.Response) -> str:
    message = _error_message(response)
    return "" if message.startswith("no readable message") else f": {message}"


# --------------------------------------------------------------------------
# The push


def push_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    server: str,
    token: str,
    host: str | None = None,
    state_path: str | os.PathLike[str] | None = None,
    cache: HashCache | str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    analyse: bool = True,
    session: requests.Session | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_message: Callable[[str], None] | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
) -> PushReport:
    """Hash, analyse and push every model file under `paths`; return what happened.

    `cache`: a HashCache, a path to one, or None for default_cache_path().
    Per-file problems (unreadable, FIFO, vanished, refused by the server) go to
    `report.failed` and the push goes on; a problem with the whole push (bad
    token, bad request, server gone) raises a PushError carrying the report so far.
    """
    server = normalise_server(server)
    if not token or not token.strip():
        raise PushUsageError("a token is required (--token, or MODELXREF_TOKEN)")
    if not 1 <= batch_size <= MAX_BATCH:
        raise PushUsageError(f"batch size must be between 1 and {MAX_BATCH}, got {batch_size}")
    host = (host or socket.gethostname()).strip()
    if not host:
        raise PushUsageError("this machine has no host name; pass --host NAME")
    say = on_message or (lambda text: print(text, file=sys.stderr))
    state_file = Path(state_path) if state_path is not None else default_state_path(server)
    report = PushReport()

    own_cache = not isinstance(cache, HashCache)
    try:
        hash_cache = cache if isinstance(cache, HashCache) else HashCache(Path(cache) if cache else default_cache_path())
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    own_session = session is None
    session = session or make_session()
    try:
        with _state_lock(state_file):
            state = PushState(state_file, server=server, host=host, token=token, warn=say)
            sender = _Sender(url=server + PUSH_ENDPOINT, token=token, host=host, session=session, retry=retry,
                             sleep=sleep, report=report, timeout=timeout)
            _run(paths, state=state, sender=sender, cache=hash_cache, batch_size=batch_size, analyse=analyse,
                 report=report, say=say, show_progress=progress)
    except PushError as exc:
        exc.report = report
        raise
    finally:
        if own_cache:
            hash_cache.close()
        if own_session:
            session.close()
    return report


def _run(paths: Iterable[str | os.PathLike[str]], *, state: PushState, sender: _Sender, cache: HashCache,
         batch_size: int, analyse: bool, report: PushReport, say: Callable[[str], None], show_progress: bool) -> None:
    from tqdm import tqdm

    units = collect_units(paths, report=report)
    for path, why in report.failed:
        say(f"failed: {path}: {why}")
    for path, why in report.passed_over:
        say(f"not pushed: {path}: {why}")
    files_bar = tqdm(total=len(units), desc="files", unit="file", position=0, file=sys.stderr,
                     disable=not show_progress, leave=False)
    bytes_bar = tqdm(total=sum(u.size for u in units), desc="bytes", unit="B", unit_scale=True, unit_divisor=1024,
                     position=1, file=sys.stderr, disable=not show_progress, leave=False)
    if show_progress:
        say = _through_tqdm(say)
    batch: list[_Pending] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            _send_batch(batch, state=state, sender=sender, report=report, say=say)
        batch, batch_bytes = [], 0

    try:
        for unit in units:
            done_before = bytes_bar.n
            try:
                pending = _prepare(unit, state=state, cache=cache, analyse=analyse, report=report,
                                   bytes_progress=lambda done, _total: _set_bar(bytes_bar, done_before + done))
            except HashingError as exc:
                report.failed.append((unit.path, _reason(exc, unit.path)))
                say(f"failed: {unit.path}: {_reason(exc, unit.path)}")
                pending = None
            _set_bar(bytes_bar, done_before + unit.size)
            files_bar.update(1)
            if pending is None:
                continue
            if batch and batch_bytes + pending.encoded_size > MAX_BODY_BYTES:
                flush()
            batch.append(pending)
            batch_bytes += pending.encoded_size
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        files_bar.close()
        bytes_bar.close()
    if report.skipped_unchanged:
        say(f"{report.skipped_unchanged} file(s) skipped: unchanged since the server accepted them")


def _prepare(unit: _Unit, *, state: PushState, cache: HashCache, analyse: bool, report: PushReport,
             bytes_progress: Callable[[int, int], None]) -> _Pending | None:
    """The record for one file, or None if the server already has it as it is."""
    if unit.is_folder:
        return _prepare_folder(unit, state=state, cache=cache, analyse=analyse, report=report,
                               bytes_progress=bytes_progress)
    identity = file_identity(unit.path)  # refuses FIFOs and other special files without opening them
    if state.is_pushed(unit.path, identity, need_analysis=analyse):
        report.skipped_unchanged += 1
        return None
    try:
        hashes, identity, _hit = hash_file_cached_with_identity(unit.path, cache=cache, progress=bytes_progress)
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    record = {"path": unit.path, "hashes": hashes.to_json(), **_analysis_fields(unit.path, analyse=analyse)}
    return _Pending(unit.path, analyse, record, _encoded_size(record), identity=identity, sha256=hashes.sha256)


def folder_members_identity(folder: str | os.PathLike[str]) -> str:
    """SHA256 over the sorted (relative path, device, inode, size, mtime_ns) of a folder's weight files.

    Taken before hashing: a member changing meanwhile leaves an identity that
    no longer matches, so the next run sends the folder again.
    """
    root = Path(folder)
    rows = []
    for member in _folder_weight_files(root):
        ident = file_identity(member)  # refuses FIFOs and other special files without opening them
        rows.append((member.relative_to(root).as_posix(), ident.device, ident.inode, ident.size, ident.mtime_ns))
    return hashlib.sha256(json.dumps(sorted(rows), separators=(",", ":")).encode("utf-8")).hexdigest()


def _prepare_folder(unit: _Unit, *, state: PushState, cache: HashCache, analyse: bool, report: PushReport,
                    bytes_progress: Callable[[int, int], None]) -> _Pending | None:
    members_identity = folder_members_identity(unit.path)
    if state.is_folder_pushed(unit.path, members_identity, need_analysis=analyse):
        report.skipped_unchanged += 1
        return None
    try:
        folder = hash_folder(unit.path, bytes_progress, cache=cache)
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    member_paths = [m.relative_path for m in folder.members]
    record = {"path": unit.path, "kind": "folder", "folder": folder.to_json(),
              **_analysis_fields(unit.path, analyse=analyse, member_paths=member_paths)}
    return _Pending(unit.path, analyse, record, _encoded_size(record), members_identity=members_identity,
                    folder_digest=folder.digest)


def _encoded_size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, separators=(",", ":")).encode("utf-8"))


def _send_batch(batch: list[_Pending], *, state: PushState, sender: _Sender, report: PushReport,
                say: Callable[[str], None]) -> None:
    answer = sender.post([p.record for p in batch])
    refused = {e["index"]: e for e in answer.get("errors", [])}
    report.sent += len(batch)
    report.created += answer["created"]
    report.updated += answer["updated"]
    report.unchanged += answer["unchanged"]
    for index, pending in enumerate(batch):
        if index in refused:
            why = f"refused by the server: {refused[index].get('error') or 'no reason given'}"
            report.failed.append((pending.path, why))
            say(f"failed: {pending.path}: {why}")
            state.forget(pending.path)
        else:
            pending.remember(state)
    state.save()


def _reason(exc: Exception, path: str) -> str:
    # Engine messages start with the path; the report already carries it.
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def _set_bar(bar: Any, value: int) -> None:
    if value > bar.n:
        bar.update(value - bar.n)


def _through_tqdm(say: Callable[[str], None]) -> Callable[[str], None]:
    from tqdm import tqdm

    def write(text: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            say(text)

    return write


# --------------------------------------------------------------------------
# Command line


def build_parser(prog: str = "python -m workers.push_client") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Send the hashes (never the contents) of the model files under PATH to a ModelXRef server.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders; folders are searched by content")
    parser.add_argument("--server", default=os.environ.get("MODELXREF_SERVER"),
                        help="the ModelXRef site, e.g. https://modelxref.example.org (or MODELXREF_SERVER)")
    parser.add_argument("--token", default=os.environ.get("MODELXREF_TOKEN"),
                        help="API token of your account (or MODELXREF_TOKEN)")
    parser.add_argument("--host", help="name this machine is stored under (default: its host name)")
    parser.add_argument("--state", help="push state file (default: ~/.cache/modelxref/push-state-<server>.json)")
    parser.add_argument("--cache", help="hash cache (default: $MODELXREF_PUSH_CACHE or ~/.cache/modelxref/hash-cache.sqlite3)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"records per request, 1-{MAX_BATCH}")
    parser.add_argument("--no-analyse", dest="analyse", action="store_false",
                        help="send hashes and format only: no safety scan or tensor fingerprint")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (they are shown only on a terminal anyway)")


def run(args: argparse.Namespace, *, out: Any = None, err: Any = None) -> int:
    """Run a parsed command line; returns the exit status (0 all pushed, 1 some failed, 2 could not push)."""
    out = out or sys.stdout
    err = err or sys.stderr

    def say(text: str) -> None:
        _write_line(err, text)

    if not args.server:
        say("push: --server is required (or set MODELXREF_SERVER)")
        return 2
    if not args.token:
        say("push: --token is required (or set MODELXREF_TOKEN)")
        return 2
    try:
        report = push_paths(
            args.paths, server=args.server, token=args.token, host=args.host, state_path=args.state,
            cache=args.cache, batch_size=args.batch, analyse=args.analyse, on_message=say,
            progress=args.progress and _is_terminal(err),
        )
    except PushError as exc:
        say(f"push: {exc}")
        if exc.report is not None:
            _write_line(out, summary(exc.report))
        return 2
    except KeyboardInterrupt:
        say("push: interrupted; accepted batches are remembered, run again to continue")
        return 130
    _write_line(out, summary(report))
    return 0 if report.ok else 1


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _write_line(stream: Any, text: str) -> None:
    # One write per line: Django's OutputWrapper adds a newline to every write.
    stream.write(text + "\n")
    stream.flush()


def summary(report: PushReport) -> str:
    return (
        f"{report.sent} sent ({report.created} created, {report.updated} updated, {report.unchanged} unchanged), "
        f"{report.skipped_unchanged} skipped as already pushed, {len(report.failed)} failed, "
        f"{report.requests} request(s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
