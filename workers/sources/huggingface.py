"""Hugging Face Hub: file index of one repo revision, and the free hashes in the local HF cache.

PURE: no Django. Every Hub call goes through the real `huggingface_hub` client
(HfApi), whose errors are mapped to the one error type `HuggingFaceError`.

Where the hashes are (see /work/shared/reference/huggingface-api.md):
- LFS/Xet files (all weights) carry a SHA-256; their git `blobId` is the SHA-1 of
  the LFS pointer text, not of the content.
- small plain-git files only carry their git blob SHA-1.
- the library cache names every blob by its etag: sha256 for LFS files, git
  SHA-1 otherwise, so a cached file's hash is known without reading it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat as _stat
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

__all__ = [
    "HuggingFaceError",
    "HubFile",
    "RepoIndex",
    "index_repo",
    "git_blob_sha1",
    "lfs_pointer_sha1",
    "lfs_pointer_text",
    "CachedHubFile",
    "HfCacheSkip",
    "HfCacheScan",
    "scan_hf_cache",
    "scan_hf_cache_detailed",
    "is_hf_cache_path",
]

ERROR_KINDS = frozenset({"repo_not_found", "revision_not_found", "gated", "rate_limited", "unavailable", "other"})
REPO_TYPES = ("model", "dataset", "space")
DEFAULT_TIMEOUT_S = 30.0

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# IETF draft header the Hub sends on every answer, e.g. `"api";r=0;t=55`.
_RATELIMIT = re.compile(r'"(?P<kind>\w+)"\s*;\s*r\s*=\s*(?P<r>\d+)\s*;\s*t\s*=\s*(?P<t>\d+)')

# A zero-byte blob is only plausible if its name is the hash of nothing.
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_EMPTY_GIT_SHA1 = hashlib.sha1(b"blob 0\0").hexdigest()


class HuggingFaceError(Exception):
    """The only error this module raises.

    kind: repo_not_found | revision_not_found | gated | rate_limited | unavailable | other.
    retryable: a later identical call may succeed (rate limits, outages).
    retry_after: seconds the Hub asked us to wait, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "other",
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown HuggingFaceError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # LFS/Xet files only
    git_sha1: str | None  # plain git files only (for LFS files the blob id hashes the pointer)
    is_lfs: bool


@dataclass(frozen=True)
class RepoIndex:
    repo_id: str
    repo_type: str
    revision: str  # 40-hex commit sha the listing belongs to
    files: tuple[HubFile, ...]

    def by_path(self) -> dict[str, HubFile]:
        return {f.path: f for f in self.files}


# --------------------------------------------------------------------------- hashes


def git_blob_sha1(data_or_path: bytes | bytearray | memoryview | str | os.PathLike) -> str:
    """Git blob id: sha1(b"blob <len>\\0" + content). Bytes are hashed as given; a path is streamed."""
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = bytes(data_or_path)
        h = hashlib.sha1(b"blob %d\0" % len(data))
        h.update(data)
        return h.hexdigest()
    path = os.fspath(data_or_path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h = hashlib.sha1(b"blob %d\0" % size)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        read = 0
        while n := fh.readinto(buf):
            h.update(view[:n])
            read += n
    if read != size:
        raise OSError(f"{path} changed size while hashing ({size} -> {read} bytes)")
    return h.hexdigest()


def lfs_pointer_text(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_sha1(sha256: str, size: int) -> str:
    """The git blob id the Hub reports for an LFS file: the blob sha1 of its pointer text."""
    return git_blob_sha1(lfs_pointer_text(sha256, size))


# --------------------------------------------------------------------------- Hub index


def index_repo(
    *,
    repo_id: str,
    revision: str | None = None,
    repo_type: str = "model",
    endpoint: str | None = None,
    token: str | bool | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> RepoIndex:
    """List every file of `repo_id` at `revision` (default branch when None) with its hash.

    One repo_info call with files_metadata=True; only if the siblings come back without
    sizes/blob ids is the (paginated) tree listed, pinned to the commit that call resolved
    so both answers describe the same commit.
    """
    if repo_type not in REPO_TYPES:
        raise HuggingFaceError(f"unsupported repo_type {repo_type!r}", kind="other")
    api = HfApi(endpoint=endpoint, token=token, library_name="modelxref")
    with _mapped_errors(repo_id=repo_id, revision=revision):
        info = api.repo_info(
            repo_id, revision=revision, repo_type=repo_type, files_metadata=True, timeout=timeout
        )
        commit = (getattr(info, "sha", None) or "").lower()
        if not _HEX40.match(commit):
            raise HuggingFaceError(
                f"Hub answer for {repo_id}@{revision} has no commit sha (got {commit!r})", kind="other"
            )
        if revision is not None and _HEX40.match(revision.lower()) and revision.lower() != commit:
            raise HuggingFaceError(
                f"asked for {repo_id}@{revision} but the Hub answered for commit {commit}", kind="other"
            )
        siblings = info.siblings or []
        if siblings and all(_sibling_has_metadata(s) for s in siblings):
            files = [_hub_file(s.rfilename, s.size, s.blob_id, s.lfs) for s in siblings]
        else:
            # expand=False on purpose: the base listing already has size/oid/lfs, and the
            # expanded one is paged 50 entries at a time instead of 1000.
            entries = api.list_repo_tree(
                repo_id, recursive=True, expand=False, revision=commit, repo_type=repo_type
            )
            files = [
                _hub_file(e.path, e.size, e.blob_id, e.lfs)
                for e in entries
                if hasattr(e, "blob_id")  # RepoFolder has tree_id instead
            ]
    seen: set[str] = set()
    for f in files:
        if f.path in seen:
            raise HuggingFaceError(f"Hub listed {f.path!r} twice in {repo_id}@{commit}", kind="other")
        seen.add(f.path)
    return RepoIndex(
        repo_id=getattr(info, "id", None) or repo_id,
        repo_type=repo_type,
        revision=commit,
        files=tuple(sorted(files, key=lambda f: f.path)),
    )


def _sibling_has_metadata(sibling) -> bool:
    return sibling.size is not None and (sibling.lfs is not None or sibling.blob_id is not None)


def _hub_file(path, size, blob_id, lfs) -> HubFile:
    if not isinstance(path, str) or not path:
        raise HuggingFaceError(f"Hub listed a file without a usable path: {path!r}", kind="other")
    if lfs is not None:
        sha256 = str(lfs["sha256"] if isinstance(lfs, dict) else lfs.sha256).lower()
        lfs_size = lfs["size"] if isinstance(lfs, dict) else lfs.size
        if not _HEX64.match(sha256) or not isinstance(lfs_size, int) or lfs_size < 0:
            raise HuggingFaceError(f"Hub gave malformed LFS metadata for {path!r}", kind="other")
        return HubFile(path=path, size=lfs_size, sha256=sha256, git_sha1=None, is_lfs=True)
    blob = str(blob_id or "").lower()
    if not _HEX40.match(blob) or not isinstance(size, int) or size < 0:
        raise HuggingFaceError(f"Hub gave no usable size/blob id for {path!r}", kind="other")
    return HubFile(path=path, size=size, sha256=None, git_sha1=blob, is_lfs=False)


class _mapped_errors:
    """Turn every failure of the huggingface_hub client into a HuggingFaceError."""

    def __init__(self, *, repo_id: str, revision: str | None):
        self.where = f"{repo_id}@{revision or 'default branch'}"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, HuggingFaceError) or not isinstance(exc, Exception):
            return False
        raise _map_error(exc, self.where) from exc


def _map_error(exc: Exception, where: str) -> HuggingFaceError:
    # GatedRepoError subclasses RepositoryNotFoundError: test it first.
    if isinstance(exc, GatedRepoError):
        return HuggingFaceError(f"{where}: gated repo, access not granted", kind="gated", status=_status(exc))
    if isinstance(exc, RevisionNotFoundError):
        return HuggingFaceError(f"{where}: revision not found", kind="revision_not_found", status=_status(exc))
    if isinstance(exc, (RepositoryNotFoundError, DisabledRepoError)):
        return HuggingFaceError(f"{where}: repo not found or private", kind="repo_not_found", status=_status(exc))
    if isinstance(exc, HFValidationError):
        return HuggingFaceError(f"{where}: not a valid repo id ({exc})", kind="repo_not_found")
    if isinstance(exc, RemoteEntryNotFoundError):
        return HuggingFaceError(f"{where}: entry not found", kind="other", status=_status(exc))
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        headers = exc.response.headers if exc.response is not None else {}
        if status == 429:
            return HuggingFaceError(
                f"{where}: rate limited by the Hub",
                kind="rate_limited",
                retryable=True,
                retry_after=retry_after_from_headers(headers),
                status=status,
            )
        if status == 404:
            return HuggingFaceError(f"{where}: not found (HTTP 404)", kind="repo_not_found", status=status)
        if status is not None and (status >= 500 or status == 408):
            return HuggingFaceError(
                f"{where}: Hub unavailable (HTTP {status})",
                kind="unavailable",
                retryable=True,
                retry_after=retry_after_from_headers(headers),
                status=status,
            )
        return HuggingFaceError(f"{where}: HTTP {status}: {_first_line(exc)}", kind="other", status=status)
    if isinstance(exc, OfflineModeIsEnabled):
        return HuggingFaceError(f"{where}: HF_HUB_OFFLINE is set", kind="unavailable", retryable=False)
    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return HuggingFaceError(f"{where}: cannot reach the Hub: {exc}", kind="unavailable", retryable=True)
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
        # A 200 answer we cannot parse (the client raised while building its dataclasses).
        return HuggingFaceError(f"{where}: malformed Hub answer: {exc!r}", kind="other")
    return HuggingFaceError(f"{where}: {exc!r}", kind="other")


def _status(exc: HfHubHTTPError) -> int | None:
    return exc.response.status_code if getattr(exc, "response", None) is not None else None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def retry_after_from_headers(headers) -> float | None:
    """Seconds to wait: the Hub's `RateLimit: "api";r=0;t=<s>` first, then a numeric Retry-After."""
    lowered = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    m = _RATELIMIT.search(lowered.get("ratelimit", ""))
    if m and int(m.group("r")) == 0:
        return float(m.group("t"))
    value = lowered.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    return None


# --------------------------------------------------------------------------- local HF cache
#
# Layout written by huggingface_hub (hf_hub_download / snapshot_download):
#   <cache>/{models,datasets,spaces}--{org}--{name}/blobs/<etag>[.incomplete]
#   <cache>/.../snapshots/<commit>/<path in repo>  -> symlink to ../../blobs/<etag>
#   <cache>/.../refs/<branch>  (commit sha), .no_exist/<commit>/<path> (negative cache)
# We read names, links and stat() only: never the blob contents.

_TYPE_BY_PREFIX = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class CachedHubFile:
    repo_id: str
    repo_type: str
    revision: str  # commit sha of the snapshot
    path: str  # posix path relative to the repo root
    snapshot_path: str
    blob_path: str
    sha256: str | None  # etag of an LFS blob
    git_sha1: str | None  # etag of a plain git blob
    size: int


@dataclass(frozen=True)
class HfCacheSkip:
    path: str
    reason: str


@dataclass
class HfCacheScan:
    files: list[CachedHubFile] = field(default_factory=list)
    skipped: list[HfCacheSkip] = field(default_factory=list)


def scan_hf_cache(cache_dir: str | os.PathLike) -> list[CachedHubFile]:
    """Every usable cached file with its free hash; see scan_hf_cache_detailed for what was skipped."""
    return scan_hf_cache_detailed(cache_dir).files


def scan_hf_cache_detailed(cache_dir: str | os.PathLike) -> HfCacheScan:
    root = Path(cache_dir)
    scan = HfCacheScan()
    if not root.is_dir():
        return scan
    real_root = Path(os.path.realpath(root))
    repo_dirs = [root] if _parse_repo_folder(root.name) else sorted(p for p in root.iterdir() if p.is_dir())
    for repo_dir in repo_dirs:
        parsed = _parse_repo_folder(repo_dir.name)
        if parsed is None or repo_dir.is_symlink():
            continue
        _scan_repo(repo_dir, parsed, real_root, scan)
    scan.files.sort(key=lambda f: (f.repo_type, f.repo_id, f.revision, f.path))
    return scan


def is_hf_cache_path(path: str | os.PathLike) -> CachedHubFile | None:
    """Identify one file inside an HF cache without reading it.

    Accepts a snapshot path (`.../snapshots/<commit>/<path>`) or a blob path
    (`.../blobs/<etag>`; the snapshot linking to it gives the revision and repo path,
    the newest snapshot wins when several do). None when it is not a usable cache file.
    """
    p = Path(os.path.abspath(path))
    parts = p.parts
    for i in range(len(parts) - 1, 0, -1):
        parsed = _parse_repo_folder(parts[i])
        if parsed is None:
            continue
        repo_dir = Path(*parts[: i + 1])
        rest = parts[i + 1 :]
        cache_root = Path(os.path.realpath(repo_dir.parent))
        if len(rest) >= 3 and rest[0] == "snapshots":
            return _cached_file(repo_dir, parsed, rest[1], "/".join(rest[2:]), p, cache_root)
        if len(rest) == 2 and rest[0] == "blobs":
            return _find_snapshot_for_blob(repo_dir, parsed, rest[1], cache_root)
        return None
    return None


def _parse_repo_folder(name: str) -> tuple[str, str] | None:
    prefix, sep, rest = name.partition("--")
    if not sep or prefix not in _TYPE_BY_PREFIX or not rest:
        return None
    segments = rest.split("--")
    # Hub repo names may not contain "--", so anything else is not a cache folder.
    if len(segments) > 2 or any(not s for s in segments):
        return None
    return _TYPE_BY_PREFIX[prefix], "/".join(segments)


def _scan_repo(repo_dir: Path, parsed: tuple[str, str], real_root: Path, scan: HfCacheScan) -> None:
    blobs = repo_dir / "blobs"
    if blobs.is_dir() and not blobs.is_symlink():
        for blob in sorted(blobs.iterdir()):
            if blob.name.endswith(".incomplete"):
                scan.skipped.append(HfCacheSkip(str(blob), "incomplete download (.incomplete blob)"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir() or snapshots.is_symlink():
        return
    for commit_dir in sorted(snapshots.iterdir()):
        if commit_dir.is_symlink() or not commit_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(commit_dir, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
                snap = Path(dirpath, name)
                rel = snap.relative_to(commit_dir).as_posix()
                result = _cached_file_or_reason(repo_dir, parsed, commit_dir.name, rel, snap, real_root)
                if isinstance(result, CachedHubFile):
                    scan.files.append(result)
                else:
                    scan.skipped.append(HfCacheSkip(str(snap), result))


def _cached_file(repo_dir, parsed, commit, rel, snap, real_root) -> CachedHubFile | None:
    result = _cached_file_or_reason(repo_dir, parsed, commit, rel, Path(snap), real_root)
    return result if isinstance(result, CachedHubFile) else None


def _cached_file_or_reason(
    repo_dir: Path, parsed: tuple[str, str], commit: str, rel: str, snap: Path, real_root: Path
) -> CachedHubFile | str:
    repo_type, repo_id = parsed
    if not _HEX40.match(commit):
        return f"snapshot folder {commit!r} is not a commit sha"
    try:
        st = os.lstat(snap)
    except FileNotFoundError:
        return "no such file"
    if not _stat.S_ISLNK(st.st_mode):
        # Caches made without symlink support hold plain copies: no etag to read.
        return "not a link to a blob (copied file): hash unknown without reading"
    target = os.path.join(os.path.dirname(snap), os.readlink(snap))
    real_target = Path(os.path.realpath(target))
    real_blobs = Path(os.path.realpath(repo_dir / "blobs"))
    if not _is_within(real_target, real_root) or real_target.parent != real_blobs:
        return "link points outside this repo's blobs folder (not followed)"
    try:
        bst = os.stat(real_target, follow_symlinks=False)
    except FileNotFoundError:
        return "broken link: blob missing"
    if not _stat.S_ISREG(bst.st_mode):
        return "blob is not a regular file"
    etag = real_target.name
    if _HEX64.match(etag):
        sha256, git_sha1 = etag, None
    elif _HEX40.match(etag):
        sha256, git_sha1 = None, etag
    else:
        return f"blob name {etag!r} is neither a sha256 nor a git sha1"
    if bst.st_size == 0 and etag not in (_EMPTY_SHA256, _EMPTY_GIT_SHA1):
        return "blob is empty but its name is not the hash of empty content (truncated)"
    return CachedHubFile(
        repo_id=repo_id,
        repo_type=repo_type,
        revision=commit,
        path=rel,
        snapshot_path=str(snap),
        blob_path=str(real_target),
        sha256=sha256,
        git_sha1=git_sha1,
        size=bst.st_size,
    )


def _find_snapshot_for_blob(repo_dir: Path, parsed, etag: str, real_root: Path) -> CachedHubFile | None:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    real_blob = Path(os.path.realpath(repo_dir / "blobs" / etag))
    best: tuple[int, CachedHubFile] | None = None
    for commit_dir in snapshots.iterdir():
        if commit_dir.is_symlink() or not commit_dir.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(commit_dir, followlinks=False):
            for name in filenames:
                snap = Path(dirpath, name)
                if not snap.is_symlink() or Path(os.path.realpath(snap)) != real_blob:
                    continue
                found = _cached_file(
                    repo_dir, parsed, commit_dir.name, snap.relative_to(commit_dir).as_posix(), snap, real_root
                )
                if found is not None:
                    mtime = os.lstat(commit_dir).st_mtime_ns
                    if best is None or mtime > best[0]:
                        best = (mtime, found)
    return best[1] if best else None


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
