"""A stand-in Civitai API over real HTTP on 127.0.0.1, speaking the real shapes.

    with FakeCivitai() as fake:
        mid = fake.add_model(name="Toad", type="Checkpoint")
        vid = fake.add_version(mid, name="v1", base_model="SD 1.5",
                               files=[{"name": "toad.safetensors",
                                       "hashes": file_hashes(sha256="...", crc32="...")}])
        client = CivitaiClient(base_url=fake.base_url)

Behaviour copied from the real service (see /work/shared/reference/civitai-api.md):
GET by-hash matches any stored hash kind, upper-cases the input, exact string
match, oldest published version wins, 404 JSON on a miss, Cache-Control as
the real one; POST by-hash takes <= 100 SHA256 strings; /models hides NSFW
models unless nsfw=true; unknown paths get an HTML 404 page.

Fault injection: `fail_next(n, status=429, ...)`, `slow(seconds)`.
Request log: `.requests` is a list of (method, path_with_query, body).

Standalone (for `make demo`):
    python -m tests.fakes.civitai --port 8765 --seed FILE.json
where FILE.json is {"models": [{"name", "type", "nsfw", "versions": [
{"name", "base_model", "published_at", "files": [{"name", "hashes", "metadata"}]}]}]}
(camelCase keys such as baseModel/modelVersions are accepted too).
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/api/v1"
BY_HASH_CACHE_CONTROL = "public, s-maxage=3600, stale-while-revalidate=1800"
PUBLIC_CACHE_CONTROL = "public, s-maxage=300, stale-while-revalidate=150"
MAX_BODY = 10 * 1024 * 1024
_SHA256 = re.compile(r"[0-9A-F]{64}")
_EPOCH = datetime(2023, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

HTML_404 = (
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>404: This page could not be found"
    "</title></head><body><div><h1>404</h1><h2>This page could not be found.</h2></div></body></html>"
)
HTML_CHALLENGE = (
    "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head><body>"
    "<noscript>Enable JavaScript and cookies to continue</noscript>"
    "<div id=\"challenge-running\">Checking if the site connection is secure</div></body></html>"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def file_hashes(
    *,
    sha256: str,
    autov1: str | None = None,
    autov3: str | None = None,
    crc32: str | None = None,
    blake3: str | None = None,
) -> dict[str, str]:
    """The `hashes` object Civitai would store for a file with these digests.

    AutoV2 is derived (first 10 hex of SHA256); the others only appear when given,
    as on Civitai where old files lack some kinds.
    """
    hashes = {"SHA256": sha256.upper(), "AutoV2": sha256[:10].upper()}
    for kind, value in (("AutoV1", autov1), ("AutoV3", autov3), ("CRC32", crc32), ("BLAKE3", blake3)):
        if value is not None:
            hashes[kind] = value.upper()
    return hashes


@dataclass
class _Fault:
    status: int | None
    headers: dict[str, str]
    body: Any
    html: bool
    delay: float
    disconnect: bool


def _air_ecosystem(base_model: str | None) -> str:
    text = (base_model or "").lower()
    if text.startswith("sdxl") or text.startswith("pony"):
        return "sdxl"
    if text.startswith("flux"):
        return "flux1"
    if text.startswith("sd 2"):
        return "sd2"
    if text.startswith("sd 1"):
        return "sd1"
    return "other"


class FakeCivitai:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._models: dict[int, dict[str, Any]] = {}
        self._versions: dict[int, dict[str, Any]] = {}
        self._next_model_id = 100_001
        self._next_version_id = 200_001
        self._next_file_id = 300_001
        self._faults: list[_Fault] = []
        self._delay = 0.0
        self.raw_responses: dict[str, tuple[int, dict[str, str], bytes]] = {}  # images and hostile answers
        self.batch_nulls = False  # put a null entry into POST by-hash answers, as the real one may
        self.requests: list[tuple[str, str, Any]] = []
        self.request_headers: list[dict[str, str]] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "FakeCivitai":
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        # A short poll keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="FakeCivitai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers parked in a slow/delay fault
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "FakeCivitai":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCivitai is not started")
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    # -- seeding -----------------------------------------------------------

    file_hashes = staticmethod(file_hashes)

    def add_model(
        self,
        *,
        id: int | None = None,
        name: str = "Fake model",
        type: str = "Checkpoint",
        nsfw: bool = False,
        poi: bool = False,
        status: str = "Published",
        description: str | None = "<p>A model served by FakeCivitai.</p>",
        tags: list[str] | tuple[str, ...] = ("base model",),
        creator: str = "fake_creator",
    ) -> int:
        with self._lock:
            model_id = id if id is not None else self._next_model_id
            if model_id in self._models:
                raise ValueError(f"model {model_id} already exists")
            self._next_model_id = max(self._next_model_id, model_id + 1)
            self._models[model_id] = {
                "id": model_id, "name": name, "type": type, "nsfw": nsfw, "poi": poi,
                "status": status, "description": description, "tags": list(tags),
                "creator": creator, "version_ids": [],
            }
            return model_id

    def add_version(
        self,
        model_id: int,
        *,
        id: int | None = None,
        name: str = "v1.0",
        base_model: str | None = "SD 1.5",
        base_model_type: str | None = "Standard",
        trained_words: list[str] | tuple[str, ...] = (),
        description: str | None = None,
        status: str = "Published",
        published_at: str | datetime | None = None,
        files: list[dict[str, Any]] | None = None,
        early_access_ends_at: datetime | None = None,
        images: list[dict[str, Any]] | None = None,
    ) -> int:
        """Add a version; each file dict's keys override realistic defaults.

        `images`: dicts with optional nsfw_level (1), format ("png" | "jpeg"), color, width, height,
        meta; each is a small generated picture served at {origin}/images/{version}/{n}.{ext}.

        Without `published_at`, each new version is published one day after the
        previous one, so insertion order is publication order. Adding a version to a model
        a client already knows is how a test publishes "a newer version"; with
        `early_access_ends_at` it is in early access until then (availability EarlyAccess).
        """
        with self._lock:
            if model_id not in self._models:
                raise KeyError(f"no model {model_id}; call add_model first")
            version_id = id if id is not None else self._next_version_id
            if version_id in self._versions:
                raise ValueError(f"version {version_id} already exists")
            self._next_version_id = max(self._next_version_id, version_id + 1)
            if published_at is None:
                moment = _EPOCH + timedelta(days=len(self._versions))
            elif isinstance(published_at, datetime):
                moment = published_at
            else:
                moment = datetime.fromisoformat(published_at.replace("Z", "+00:00"))
            built_files = [self._build_file(version_id, spec) for spec in (files or [])]
            # Like Civitai, one file is primary unless the seed explicitly says none is.
            explicit = [spec.get("primary") for spec in (files or []) if "primary" in spec]
            if built_files and True not in explicit and len(explicit) < len(built_files):
                unset = [f for f, spec in zip(built_files, files or []) if "primary" not in spec]
                first_model = next((f for f in unset if f["type"] == "Model"), unset[0])
                first_model["primary"] = True
            self._versions[version_id] = {
                "id": version_id, "model_id": model_id, "name": name, "base_model": base_model,
                "base_model_type": base_model_type, "trained_words": list(trained_words),
                "description": description, "status": status,
                "published": moment, "created": moment - timedelta(minutes=3),
                "files": built_files, "early_access_ends_at": early_access_ends_at,
                "images": [self._build_image(version_id, n, spec) for n, spec in enumerate(images or [])],
            }
            self._models[model_id]["version_ids"].append(version_id)
            return version_id

    def _build_image(self, version_id: int, n: int, spec: dict[str, Any]) -> dict[str, Any]:
        fmt = spec.get("format", "png")
        width, height = spec.get("width", 48), spec.get("height", 64)
        data = generated_image(fmt=fmt, width=width, height=height, color=tuple(spec.get("color", (200, 80 + 40 * n, 60))))
        path = f"/images/{version_id}/{n}.{'jpeg' if fmt == 'jpeg' else 'png'}"
        self.raw_responses[path] = (200, {"Content-Type": f"image/{fmt}"}, data)
        return {"url": path, "nsfwLevel": spec.get("nsfw_level", 1),
                "width": width, "height": height, "hash": spec.get("blurhash", FAKE_BLURHASH), "type": "image",
                "meta": spec.get("meta", {"seed": 1234 + n, "steps": 20, "sampler": "Euler"})}

    def serve_raw(self, path: str, *, status: int = 200, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> str:
        """Answer GET `path` with exactly this (hostile images, redirects); returns its URL."""
        with self._lock:
            self.raw_responses[path] = (status, dict(headers or {}), body)
        return self.origin + path

    def _build_file(self, version_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        file_id = self._next_file_id
        self._next_file_id += 1
        metadata = {"format": "SafeTensor", "size": None, "fp": None}
        metadata.update(spec.get("metadata") or {})
        built: dict[str, Any] = {
            "id": file_id,
            "sizeKB": 2048.0,
            "name": f"file_{file_id}.safetensors",
            "type": "Model",
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            "virusScanMessage": None,
            "scannedAt": "2024-01-01T00:00:00.000Z",
            "hashes": {},
            "primary": False,
            "downloadUrl": None,
        }
        built.update({k: v for k, v in spec.items() if k != "metadata"})
        built["metadata"] = metadata
        built["hashes"] = {k: v.upper() if isinstance(v, str) else v for k, v in (built["hashes"] or {}).items()}
        if built["downloadUrl"] is None:
            built["downloadUrl"] = (
                f"https://civitai.com/api/download/models/{version_id}?type={built['type']}"
                f"&format={metadata['format']}"
            )
        return built

    def load_seed(self, data: dict[str, Any]) -> None:
        """Seed from the JSON document format described in the module docstring."""
        for model in data.get("models", []):
            model_id = self.add_model(
                **{k: model[k] for k in ("id", "name", "type", "nsfw", "poi", "status", "description", "tags")
                   if k in model}
            )
            for version in model.get("versions", model.get("modelVersions", [])):
                kwargs: dict[str, Any] = {}
                for snake, camel in (("id", "id"), ("name", "name"), ("base_model", "baseModel"),
                                     ("base_model_type", "baseModelType"), ("trained_words", "trainedWords"),
                                     ("description", "description"), ("status", "status"),
                                     ("published_at", "publishedAt"), ("files", "files"), ("images", "images")):
                    if snake in version:
                        kwargs[snake] = version[snake]
                    elif camel in version:
                        kwargs[snake] = version[camel]
                self.add_version(model_id, **kwargs)

    def version_json(self, version_id: int) -> dict[str, Any]:
        """What GET /model-versions/{id} would answer (for building expectations)."""
        with self._lock:
            return self._render_version(self._versions[version_id])

    # -- faults and log ----------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int | None = 429,
        headers: dict[str, str] | None = None,
        body: Any = None,
        html: bool = False,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """The next `n` requests (any path) get this answer instead of the real one.

        status=None answers normally after `delay` (a slow server); disconnect=True
        closes the socket without answering (a connection reset).
        """
        with self._lock:
            for _ in range(n):
                self._faults.append(_Fault(status, dict(headers or {}), body, html, delay, disconnect))

    def slow(self, seconds: float) -> None:
        """Every request waits `seconds` before answering (0 turns it off)."""
        self._delay = max(0.0, seconds)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests seen, optionally filtered by method and path (query string ignored)."""
        with self._lock:
            return sum(
                1 for m, p, _ in self.requests
                if (method is None or m == method) and (path is None or p.split("?", 1)[0] == path)
            )

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    # -- request handling (runs on server threads) -------------------------

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _published_versions(self) -> list[dict[str, Any]]:
        versions = [
            v for v in self._versions.values()
            if v["status"] == "Published" and self._models[v["model_id"]]["status"] == "Published"
        ]
        versions.sort(key=lambda v: (v["published"], v["id"]))
        return versions

    def _render_file(self, f: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(f)

    def _render_version(self, v: dict[str, Any], *, nested: bool = False) -> dict[str, Any]:
        model = self._models[v["model_id"]]
        out: dict[str, Any] = {"id": v["id"]}
        if not nested:
            out["modelId"] = v["model_id"]
        out.update({
            "name": v["name"],
            "createdAt": _iso(v["created"]),
            "updatedAt": _iso(v["published"] + timedelta(minutes=1)),
            "status": v["status"],
            "publishedAt": _iso(v["published"]),
            "trainedWords": list(v["trained_words"]),
            "trainingStatus": None,
            "trainingDetails": None,
            "baseModel": v["base_model"],
            "baseModelType": v["base_model_type"],
            "availability": "EarlyAccess" if v.get("early_access_ends_at") else "Public",
            "earlyAccessEndsAt": _iso(v["early_access_ends_at"]) if v.get("early_access_ends_at") else None,
            "earlyAccessConfig": {"timeframe": 7} if v.get("early_access_ends_at") else None,
            "description": v["description"],
            "uploadType": "Created",
            "usageControl": "Download",
            "air": f"urn:air:{_air_ecosystem(v['base_model'])}:{str(model['type']).lower()}:civitai:"
                   f"{v['model_id']}@{v['id']}",
            "stats": {"downloadCount": 10, "ratingCount": 0, "rating": 0, "thumbsUpCount": 1},
        })
        if not nested:
            out["model"] = {"name": model["name"], "type": model["type"], "nsfw": model["nsfw"], "poi": model["poi"]}
        out["files"] = [self._render_file(f) for f in v["files"]]
        out["images"] = [dict(img, url=img["url"] if img["url"].startswith("http") else self.origin + img["url"])
                         for img in v.get("images", [])]
        out["downloadUrl"] = f"https://civitai.com/api/download/models/{v['id']}"
        return out

    def _render_model(self, m: dict[str, Any]) -> dict[str, Any]:
        versions = [self._versions[vid] for vid in m["version_ids"]]
        versions = [v for v in versions if v["status"] == "Published"]
        versions.sort(key=lambda v: (v["published"], v["id"]), reverse=True)  # newest first, as on the site
        return {
            "id": m["id"],
            "name": m["name"],
            "description": m["description"],
            "allowNoCredit": True,
            "allowCommercialUse": ["Image"],
            "allowDerivatives": True,
            "allowDifferentLicense": True,
            "type": m["type"],
            "minor": False,
            "poi": m["poi"],
            "nsfw": m["nsfw"],
            "nsfwLevel": 28 if m["nsfw"] else 1,
            "stats": {"downloadCount": 10, "favoriteCount": 0, "thumbsUpCount": 1, "commentCount": 0,
                      "ratingCount": 0, "rating": 0},
            "creator": {"username": m["creator"], "image": None},
            "tags": list(m["tags"]),
            "modelVersions": [
                dict(self._render_version(v, nested=True), index=i) for i, v in enumerate(versions)
            ],
        }

    def handle(self, method: str, raw_path: str, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body bytes)."""
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        query = parse_qs(split.query)
        if method == "GET" and split.path in self.raw_responses:
            return self.raw_responses[split.path]
        if not path.startswith(API_PREFIX + "/"):
            return _html(404, HTML_404)
        route = path[len(API_PREFIX):]
        with self._lock:
            if method == "GET":
                m = re.fullmatch(r"/model-versions/by-hash/([^/]+)", route)
                if m:
                    return self._get_by_hash(m.group(1))
                m = re.fullmatch(r"/model-versions/([^/]+)", route)
                if m and m.group(1) != "by-hash":
                    return self._get_version(m.group(1))
                m = re.fullmatch(r"/models/([^/]+)", route)
                if m:
                    return self._get_model(m.group(1))
                if route == "/models":
                    return self._list_models(query)
            elif method == "POST":
                if route == "/model-versions/by-hash":
                    return self._post_by_hash(body, limit=100, ids_only=False)
                if route == "/model-versions/by-hash/ids":
                    return self._post_by_hash(body, limit=10_000, ids_only=True)
        return _html(404, HTML_404)

    def _get_by_hash(self, value: str) -> tuple[int, dict[str, str], bytes]:
        cache = {"Cache-Control": BY_HASH_CACHE_CONTROL}
        wanted = value.upper()
        if not wanted or len(wanted) > 64:
            return _json(400, {"error": "Invalid hash"}, cache)
        for v in self._published_versions():
            if any(wanted in f["hashes"].values() for f in v["files"]):
                if not any(f.get("primary") for f in v["files"]):
                    return _json(404, {"error": "Missing model file"}, cache)
                return _json(200, self._render_version(v), cache)
        return _json(404, {"error": "Model not found"}, cache)

    def _get_version(self, raw_id: str) -> tuple[int, dict[str, str], bytes]:
        if not raw_id.isdigit():
            return _json(400, {"error": "Invalid id"})
        v = self._versions.get(int(raw_id))
        if v is None or v["status"] != "Published" or self._models[v["model_id"]]["status"] != "Published":
            return _json(404, {"error": f"No version with id {raw_id}"})
        return _json(200, self._render_version(v), {"Cache-Control": PUBLIC_CACHE_CONTROL})

    def _get_model(self, raw_id: str) -> tuple[int, dict[str, str], bytes]:
        if not raw_id.isdigit():
            return _json(400, {"error": "Invalid id"})
        m = self._models.get(int(raw_id))
        if m is None or m["status"] != "Published":
            return _json(404, {"error": f"No model with id {raw_id}"})
        return _json(200, self._render_model(m), {"Cache-Control": PUBLIC_CACHE_CONTROL})

    def _list_models(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        ids: list[int] = []
        for chunk in query.get("ids", []):
            for part in chunk.split(","):
                if not part.strip().isdigit():
                    return _json(400, {"error": f"Invalid ids: {part!r}"})
                ids.append(int(part))
        if len(ids) > 100:
            return _json(400, {"error": "Too many ids (max 100)"})
        try:
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            return _json(400, {"error": "Invalid limit"})
        if not 1 <= limit <= 100:
            return _json(400, {"error": "limit must be between 1 and 100"})
        show_nsfw = query.get("nsfw", ["false"])[0].lower() == "true"
        models = [m for m in self._models.values() if m["status"] == "Published"]
        if ids:
            models = [m for m in models if m["id"] in set(ids)]
        if not show_nsfw:
            models = [m for m in models if not m["nsfw"]]
        models.sort(key=lambda m: m["id"])
        items = [self._render_model(m) for m in models[:limit]]
        meta = {"totalItems": len(models), "currentPage": 1, "pageSize": limit,
                "totalPages": max(1, -(-len(models) // limit))}
        return _json(200, {"items": items, "metadata": meta}, {"Cache-Control": PUBLIC_CACHE_CONTROL})

    def _post_by_hash(self, body: bytes | None, *, limit: int, ids_only: bool) -> tuple[int, dict[str, str], bytes]:
        try:
            hashes = json.loads(body or b"")
        except ValueError:
            return _json(400, {"error": "Invalid JSON body"})
        if not isinstance(hashes, list) or len(hashes) > limit:
            return _json(400, {"error": f"Expected an array of at most {limit} SHA256 hashes"})
        if not all(isinstance(h, str) and _SHA256.fullmatch(h.upper()) for h in hashes):
            return _json(400, {"error": "Every hash must be a 64-character SHA256"})
        wanted = {h.upper() for h in hashes}
        if ids_only:
            rows = []
            for v in self._published_versions():
                for f in v["files"]:
                    sha = f["hashes"].get("SHA256")
                    if sha in wanted:
                        rows.append({"modelVersionId": v["id"], "modelId": v["model_id"], "hash": sha})
            return _json(200, rows)
        matched = [
            v for v in self._published_versions()
            if any(f["hashes"].get("SHA256") in wanted for f in v["files"])
        ]
        matched.sort(key=lambda v: v["id"])
        out: list[Any] = [self._render_version(v) for v in matched]
        if self.batch_nulls:
            out.insert(0, None)
        return _json(200, out)


FAKE_BLURHASH = "LEHV6nWB2yk8pyo0adR*.7kCMdnj"


def generated_image(*, fmt: str = "png", width: int = 48, height: int = 64,
                    color: tuple[int, int, int] = (200, 80, 60)) -> bytes:
    """A small picture made here (a colour and a stripe), so tests and the demo need no real images."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(img).rectangle([0, height // 3, width, height // 2], fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
    return buf.getvalue()


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(payload).encode()


def _html(status: int, text: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, text.encode()


def _fault_response(fault: _Fault) -> tuple[int, dict[str, str], bytes]:
    assert fault.status is not None
    if fault.html:
        status, headers, data = _html(fault.status, fault.body if isinstance(fault.body, str) else HTML_CHALLENGE)
    elif fault.body is None:
        status, headers, data = _json(fault.status, {"error": f"Fake failure {fault.status}"})
    elif isinstance(fault.body, (bytes, str)):
        raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
        status, headers, data = fault.status, {"Content-Type": "text/plain; charset=utf-8"}, raw
    else:
        status, headers, data = _json(fault.status, fault.body)
    headers.update(fault.headers)
    return status, headers, data


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCivitai
    protocol_version = "HTTP/1.1"
    server_version = "FakeCivitai/1.0"
    # Small JSON answers on kept-alive connections: without this, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        fake = self.fake
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(*_json(413, {"error": "Body too large"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else None
        logged: Any = None
        if body is not None:
            try:
                logged = json.loads(body)
            except ValueError:
                logged = body.decode("utf-8", "replace")
        with fake._lock:
            fake.requests.append((method, self.path, logged))
            fake.request_headers.append({k: v for k, v in self.headers.items()})
        fault = fake._take_fault()
        fake._wait(fake._delay + (fault.delay if fault else 0.0))
        if fault is not None and fault.disconnect:
            self.close_connection = True
            return
        if fault is not None and fault.status is not None:
            response = _fault_response(fault)
        else:
            response = fake.handle(method, self.path, body)
        self._send(*response)

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.close_connection = True


try:
    import pytest
except ImportError:  # running standalone without the dev requirements
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def fake_civitai():
        with FakeCivitai() as fake:
            yield fake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the FakeCivitai stand-in server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", help="JSON seed file (see module docstring)")
    args = parser.parse_args(argv)
    fake = FakeCivitai(host=args.host, port=args.port)
    if args.seed:
        with open(args.seed, encoding="utf-8") as handle:
            fake.load_seed(json.load(handle))
    fake.start()
    print(f"FakeCivitai serving {fake.base_url} ({len(fake._versions)} versions)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
