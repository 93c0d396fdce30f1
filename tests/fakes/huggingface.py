"""A stand-in Hugging Face Hub over real HTTP on 127.0.0.1, for the real huggingface_hub client.

Shapes follow /work/shared/reference/huggingface-api.md and the parsing code of
huggingface_hub 2.4.0 (ModelInfo/DatasetInfo need `id`; RepoSibling needs
`rfilename` and, when `lfs` is present, `size`/`sha256`/`pointerSize`; RepoFile
needs `path`/`size`/`oid` and `lfs.oid`/`lfs.size`/`lfs.pointerSize`).

    hub = FakeHub().start()
    sha = hub.add_repo("org/model", {"model.safetensors": b"...", "config.json": b"{}"})
    HfApi(endpoint=hub.endpoint).model_info("org/model", files_metadata=True)

Standalone: python -m tests.fakes.huggingface --port 8766
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest

LFS_EXTENSIONS = frozenset(
    {".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5", ".pkl", ".npz", ".zip"}
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses plain-git files above 10 MB
TREE_PAGE_SIZE = 1000
TREE_PAGE_SIZE_EXPANDED = 50
FAKE_DATE = "2024-05-01T12:00:00.000Z"
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FakeFile:
    path: str
    content: bytes
    is_lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_sha1(self) -> str:
        """Blob sha1 of the content itself (what a plain git file's oid is)."""
        return _git_blob_sha1(self.content)

    @property
    def pointer(self) -> bytes:
        return _lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """What the Hub reports as blobId/oid: for LFS files, the blob sha1 of the pointer."""
        return _git_blob_sha1(self.pointer) if self.is_lfs else self.git_sha1


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    gated: bool
    commits: dict[str, dict[str, FakeFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # decoded path without query
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _Failure:
    status: int
    retry_after: int
    error_code: str | None
    path_contains: str | None


class FakeHub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.authorized_tokens: set[str] = set()
        # When True, model_info(files_metadata=True) answers like a Hub that dropped
        # sizes/blob ids from siblings, to exercise the tree fallback.
        self.omit_sibling_metadata = False
        self.tree_page_size = TREE_PAGE_SIZE
        self.tree_page_size_expanded = TREE_PAGE_SIZE_EXPANDED
        self._failures: list[_Failure] = []
        self._counter = 0
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        # LFS downloads redirect to another origin, like the Hub's CDN: the client stops at
        # the 302 to read X-Linked-Etag/X-Linked-Size instead of following it.
        self._cdn = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._cdn.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_endpoint(self) -> str:
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        for server, name in ((self._server, "FakeHub"), (self._cdn, "FakeHub-cdn")):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._server, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- seeding
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        lfs_paths=None,
        revision_sha: str | None = None,
        repo_type: str = "model",
        gated: bool = False,
        branch: str = "main",
    ) -> str:
        """Add a commit (a full file set) to `repo_id` and point `branch` at it. Returns the commit sha.

        lfs_paths: paths stored with LFS; None = by extension or size, like a typical .gitattributes.
        Calling again for the same repo adds a newer commit; older ones stay reachable by sha.
        """
        with self._lock:
            self._counter += 1
            fake_files = {}
            for path, content in files.items():
                is_lfs = (
                    path in lfs_paths
                    if lfs_paths is not None
                    else any(path.endswith(ext) for ext in LFS_EXTENSIONS) or len(content) > LFS_SIZE_THRESHOLD
                )
                fake_files[path] = FakeFile(path=path, content=bytes(content), is_lfs=is_lfs)
            if revision_sha is None:
                h = hashlib.sha1(f"{repo_type}/{repo_id}#{self._counter}".encode())
                for f in sorted(fake_files.values(), key=lambda f: f.path):
                    h.update(f"{f.path}\0{f.oid}\n".encode())
                revision_sha = h.hexdigest()
            key = (repo_type, repo_id)
            repo = self.repos.get(key) or FakeRepo(repo_id=repo_id, repo_type=repo_type, gated=gated)
            repo.gated = gated or repo.gated
            repo.commits[revision_sha] = fake_files
            repo.refs[branch] = revision_sha
            self.repos[key] = repo
            return revision_sha

    def grant(self, token: str) -> None:
        """Let requests bearing `token` download from gated repos."""
        self.authorized_tokens.add(token)

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        *,
        retry_after: int = 1,
        error_code: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next `n` (matching) requests with `status`; 429s carry `RateLimit: "api";r=0;t=<retry_after>`."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, error_code, path_contains) for _ in range(n))

    def requests_to(self, path_contains: str) -> list[RecordedRequest]:
        return [r for r in self.requests if path_contains in r.path]

    # -- request handling helpers (called from the handler thread)
    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for i, f in enumerate(self._failures):
                if f.path_contains is None or f.path_contains in path:
                    return self._failures.pop(i)
        return None

    def _find_repo(self, repo_type: str, segments: list[str]) -> tuple[FakeRepo | None, int]:
        """Repo ids have one or two segments; pick the one that is known."""
        with self._lock:
            if len(segments) >= 2 and (repo_type, "/".join(segments[:2])) in self.repos:
                return self.repos[(repo_type, "/".join(segments[:2]))], 2
            if segments and (repo_type, segments[0]) in self.repos:
                return self.repos[(repo_type, segments[0])], 1
        return None, 0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeHub/1.0"

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        # ---------------------------------------------------------------- dispatch
        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            raw_segments = [s for s in split.path.split("/") if s]
            segments = [unquote(s) for s in raw_segments]
            query = parse_qs(split.query, keep_blank_values=True)
            body = b""
            if method == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.requests.append(
                RecordedRequest(
                    method=method, path=unquote(split.path), query=query, headers=dict(self.headers.items())
                )
            )
            try:
                failure = hub._take_failure(unquote(split.path))
                if failure is not None:
                    headers = {}
                    if failure.status == 429:
                        headers["RateLimit"] = f'"api";r=0;t={failure.retry_after}'
                        headers["RateLimit-Policy"] = '"fixed window";"api";q=500;w=300'
                    raise _HubError(failure.status, failure.error_code, f"injected HTTP {failure.status}", headers)
                if segments[:1] == ["api"] and len(segments) >= 3 and segments[1] in _TYPES:
                    self._api(method, _TYPES[segments[1]], segments[2:], query, body)
                elif segments[:1] == ["fake-lfs"] and len(segments) == 2 and method in ("GET", "HEAD"):
                    self._lfs_blob(method, segments[1])
                elif "resolve" in segments and method in ("GET", "HEAD"):
                    self._resolve(method, segments)
                else:
                    raise _HubError(404, None, f"no route for {method} {split.path}")
            except _HubError as e:
                payload = json.dumps({"error": e.message}).encode()
                headers = {"Content-Type": "application/json", **e.headers}
                if e.code:
                    headers["X-Error-Code"] = e.code
                    headers["X-Error-Message"] = e.message
                self._send(e.status, payload, headers, head_only=method == "HEAD")

        def _send(self, status: int, body: bytes, headers: dict, *, head_only: bool = False) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, str(v))
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def _json(self, obj, headers: dict | None = None) -> None:
            self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        # ---------------------------------------------------------------- /api
        def _api(self, method, repo_type, segments, query, body) -> None:
            repo, n = hub._find_repo(repo_type, segments)
            if repo is None:
                raise _HubError(404, "RepoNotFound", "Repository not found")
            rest = segments[n:]
            if method == "GET" and not rest:
                return self._info(repo, repo.refs.get("main") or next(iter(repo.refs.values())), query)
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._info(repo, self._commit(repo, rest[1]), query)
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo, self._commit(repo, rest[1]), "/".join(rest[2:]), query)
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return self._paths_info(repo, self._commit(repo, rest[1]), body)
            raise _HubError(404, None, "no such API route")

        def _commit(self, repo: FakeRepo, revision: str) -> str:
            commit = repo.resolve(revision)
            if commit is None:
                raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _info(self, repo: FakeRepo, commit: str, query) -> None:
            files = repo.commits[commit]
            blobs = _truthy((query.get("blobs") or [None])[0])
            siblings = []
            for f in sorted(files.values(), key=lambda f: f.path):
                entry: dict = {"rfilename": f.path}
                if blobs and not hub.omit_sibling_metadata:
                    entry["size"] = f.size
                    entry["blobId"] = f.oid
                    if f.is_lfs:
                        entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
                siblings.append(entry)
            info = {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
                "sha": commit,
                "lastModified": FAKE_DATE,
                "createdAt": FAKE_DATE,
                "private": False,
                "gated": "auto" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
            if repo.repo_type == "model":
                info["modelId"] = repo.repo_id
            self._json(info)

        def _entries(self, repo: FakeRepo, commit: str, expand: bool) -> dict[str, dict]:
            """Every file and directory of a commit, keyed by path, in the Hub's tree shape."""
            entries: dict[str, dict] = {}
            for f in repo.commits[commit].values():
                entry = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
                if f.is_lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
                if expand:
                    entry["lastCommit"] = {"id": commit, "title": "Upload", "date": FAKE_DATE}
                    entry["securityFileStatus"] = {
                        "status": "safe",
                        "avScan": {"virusFound": False, "virusNames": None},
                        "pickleImportScan": None,
                    }
                entries[f.path] = entry
                parts = f.path.split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in entries:
                        entries[d] = {
                            "type": "directory",
                            "oid": hashlib.sha1(f"tree {commit} {d}".encode()).hexdigest(),
                            "size": 0,
                            "path": d,
                        }
                        if expand:
                            entries[d]["lastCommit"] = {"id": commit, "title": "Upload", "date": FAKE_DATE}
            return entries

        def _tree(self, repo: FakeRepo, commit: str, base: str, query) -> None:
            recursive = _truthy((query.get("recursive") or [None])[0])
            expand = _truthy((query.get("expand") or [None])[0])
            entries = self._entries(repo, commit, expand)
            if base and (base not in entries or entries[base]["type"] != "directory"):
                raise _HubError(404, "EntryNotFound", f"{base} does not exist on {commit}")
            prefix = f"{base}/" if base else ""
            selected = [
                e
                for path, e in sorted(entries.items())
                if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])
            ]
            page_size = hub.tree_page_size_expanded if expand else hub.tree_page_size
            cursor = int((query.get("cursor") or ["0"])[0] or 0)
            page = selected[cursor : cursor + page_size]
            headers = {}
            if cursor + page_size < len(selected):
                next_query = urlencode(
                    {"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor + page_size}
                )
                base_url = f"{hub.endpoint}{urlsplit(self.path).path}"
                headers["Link"] = f'<{base_url}?{next_query}>; rel="next"'
            self._json(page, headers)

        def _paths_info(self, repo: FakeRepo, commit: str, body: bytes) -> None:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            expand = _truthy((form.get("expand") or [None])[0])
            entries = self._entries(repo, commit, expand)
            self._json([entries[p] for p in form.get("paths", []) if p in entries])

        # ---------------------------------------------------------------- downloads
        def _resolve(self, method: str, segments: list[str]) -> None:
            repo_type = "model"
            if segments[0] in ("datasets", "spaces"):
                repo_type, segments = _TYPES[segments[0]], segments[1:]
            i = segments.index("resolve")
            repo, n = hub._find_repo(repo_type, segments[:i])
            if repo is None or n != i or len(segments) < i + 3:
                raise _HubError(404, "RepoNotFound", "Repository not found")
            if repo.gated and not self._authorized():
                raise _HubError(401, "GatedRepo", "Access to this gated repo is restricted")
            commit = self._commit(repo, segments[i + 1])
            path = "/".join(segments[i + 2 :])
            f = repo.commits[commit].get(path)
            if f is None:
                raise _HubError(404, "EntryNotFound", f"{path} does not exist on {commit}")
            common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if f.is_lfs:
                headers = {
                    **common,
                    "Location": f"{hub.cdn_endpoint}/fake-lfs/{f.sha256}",
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size),
                    "ETag": f'"{f.oid}"',
                    "Content-Length": "0",
                }
                return self._send(302, b"", headers, head_only=True)
            headers = {**common, "ETag": f'"{f.git_sha1}"', "Content-Type": "application/octet-stream"}
            self._send(200, f.content, headers, head_only=method == "HEAD")

        def _lfs_blob(self, method: str, sha256: str) -> None:
            with hub._lock:
                match = next(
                    (
                        f
                        for repo in hub.repos.values()
                        for files in repo.commits.values()
                        for f in files.values()
                        if f.is_lfs and f.sha256 == sha256
                    ),
                    None,
                )
            if match is None:
                raise _HubError(404, None, "no such LFS object")
            headers = {"ETag": f'"{sha256}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            self._send(200, match.content, headers, head_only=method == "HEAD")

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[len("Bearer ") :] in hub.authorized_tokens

    return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub().start()
    try:
        yield hub
    finally:
        hub.stop()


def _seed_demo(hub: FakeHub) -> None:
    hub.add_repo(
        "demo/tiny-model",
        {
            "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4,
            "config.json": b'{"model_type": "demo"}\n',
            "unet/diffusion_pytorch_model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\x01" * 64,
            "README.md": b"# tiny demo model\n",
        },
    )
    hub.add_repo("demo/tiny-dataset", {"data.csv": b"a,b\n1,2\n"}, repo_type="dataset")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run the stand-in Hugging Face Hub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    hub = FakeHub(args.host, args.port)
    _seed_demo(hub)
    print(f"FakeHub on {hub.endpoint} (repos: {', '.join(r for _, r in hub.repos)}); Ctrl-C to stop", flush=True)
    hub.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
