"""The push client (workers.push_client, workers.push) against a real HTTP server on 127.0.0.1.

`PushStandIn` speaks the push contract (POST /api/v1/files/push/, Token auth,
<= 500 records, per-record errors by index, file and folder records) and
validates hashes with the engine's own ComputedHashes/FolderHashes.from_json, so
it needs no database. The last test
runs against the real Django endpoint when it exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from workers import push_client
import blake3

from workers.hashing import ComputedHashes, FolderHashes, HashesFormatError
from workers.push.report import PushAuthError, PushRefusedError, PushUnavailableError
from workers.push.send import push_paths
from workers.sources.http import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD_TOKEN = "t0ken-for-tests"
FAST_RETRY = RetryPolicy(base=0.01, cap=0.05, max_attempts=3, jitter=0.0)


class PushStandIn:
    """The push endpoint's contract over real HTTP; stores {(host, path): record}."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict] = {}
        self.posts: list[list[str]] = []  # paths of each POST that reached the handler
        self.refuse_paths: set[str] = set()  # per-record errors for these
        self.scripted: list[tuple[int, dict, dict]] = []  # (status, headers, body) answers before real ones
        self.fail_from_post: int | None = None  # 1-based: this POST and later ones get 503
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, doc = stand_in.handle(self.path, self.headers.get("Authorization"), body)
                raw = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PushStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, auth: str | None, body: bytes) -> tuple[int, dict, dict]:
        if path != "/api/v1/files/push/":
            return 404, {}, {"detail": "Not found."}
        if auth != f"Token {GOOD_TOKEN}":
            return 401, {}, {"detail": "Invalid token."}
        with self.lock:
            if self.scripted:
                return self.scripted.pop(0)
            try:
                doc = json.loads(body)
            except ValueError:
                return 400, {}, {"error": {"code": "bad_json", "message": "body is not JSON", "detail": None}}
            files = doc.get("files") if isinstance(doc, dict) else None
            host = doc.get("host") if isinstance(doc, dict) else None
            if not isinstance(host, str) or not host or not isinstance(files, list) or len(files) > 500:
                return 400, {}, {"error": {"code": "bad_body", "message": "need host and <= 500 files", "detail": None}}
            self.posts.append([r.get("path") for r in files])
            if self.fail_from_post is not None and len(self.posts) >= self.fail_from_post:
                return 503, {}, {"error": {"code": "unavailable", "message": "down for a moment", "detail": None}}
            answer = {"created": 0, "updated": 0, "unchanged": 0, "ids": [], "errors": []}
            for index, record in enumerate(files):
                try:
                    self._store(host, record, answer)
                except (ValueError, HashesFormatError) as exc:
                    answer["errors"].append({"index": index, "path": record.get("path"), "error": str(exc)})
            return 200, {}, answer

    def _store(self, host: str, record: dict, answer: dict) -> None:
        path = record.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path must be absolute")
        if path in self.refuse_paths:
            raise ValueError("refused by the stand-in")
        if record.get("kind", "file") == "folder":
            # A folder is known by its digest; its members by their own SHA256.
            digest = FolderHashes.from_json(record.get("folder")).digest
        else:
            digest = ComputedHashes.from_json(record.get("hashes")).sha256
        safety = record.get("safety")
        if safety is not None and safety.get("verdict") not in {"safe", "suspicious", "dangerous", "unreadable"}:
            raise ValueError("bad verdict")
        old = self.stored.get((host, path))
        self.stored[(host, path)] = {**record, "sha256": digest}
        answer["ids"].append(len(self.stored))
        if old is None:
            answer["created"] += 1
        elif old["sha256"] == digest:
            answer["unchanged"] += 1
        else:
            answer["updated"] += 1

    def sha256_of(self, path: Path, host: str = "box") -> str | None:
        record = self.stored.get((host, str(path)))
        return record and record["sha256"]


def write_safetensors(path: Path, *, seed: int, count: int = 64) -> Path:
    """A small valid safetensors file with one F32 tensor of `seed`-dependent values."""
    data = np.random.default_rng(seed).standard_normal(count).astype("<f4").tobytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [count], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server():
    with PushStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def models(tmp_path) -> Path:
    root = tmp_path / "models"
    for i in range(5):
        write_safetensors(root / f"m{i}.safetensors", seed=i)
    return root


@pytest.fixture
def push(tmp_path, server):
    """push_paths with this test's state and cache files and no real sleeping."""
    sleeps: list[float] = []

    def run(paths, **kwargs):
        options = dict(server=server.url, token=GOOD_TOKEN, host="box", state_path=tmp_path / "state.json",
                       cache=tmp_path / "cache.sqlite3", progress=False, sleep=sleeps.append, retry=FAST_RETRY,
                       on_message=lambda text: None)
        options.update(kwargs)
        return push_paths([str(p) for p in paths], **options)

    run.sleeps = sleeps
    return run


def test_first_push_sends_every_file_and_server_stores_their_hashes(push, server, models):
    report = push([models])
    files = sorted(models.glob("*.safetensors"))
    assert (report.sent, report.created, report.skipped_unchanged, report.failed) == (5, 5, 0, [])
    assert report.requests == 1
    for f in files:
        assert server.sha256_of(f) == sha256(f)
        stored = server.stored[("box", str(f))]
        assert stored["format"] == "safetensors"
        assert stored["safety"]["verdict"] == "safe"
        assert stored["fingerprint"]["content_id"]


def test_second_run_sends_nothing(push, server, models):
    push([models])
    posts_before = len(server.posts)
    report = push([models])
    assert report.skipped_unchanged == 5
    assert (report.sent, report.requests) == (0, 0)
    assert len(server.posts) == posts_before


def test_changed_file_is_resent_with_its_new_hash(push, server, models):
    push([models])
    changed = write_safetensors(models / "m2.safetensors", seed=99)
    report = push([models])
    assert (report.sent, report.updated, report.skipped_unchanged) == (1, 1, 4)
    assert server.posts[-1] == [str(changed)]
    assert server.sha256_of(changed) == sha256(changed)


def test_touched_file_is_resent_and_server_finds_it_unchanged(push, server, models):
    push([models])
    touched = models / "m0.safetensors"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    report = push([models])
    assert server.posts[-1] == [str(touched)]
    assert (report.sent, report.unchanged, report.skipped_unchanged) == (1, 1, 4)


def test_interrupted_run_then_rerun_sends_only_the_rest(push, server, models):
    server.fail_from_post = 2
    with pytest.raises(PushUnavailableError, match="503") as caught:
        push([models], batch_size=2)
    assert caught.value.report.sent == 2
    assert len(server.stored) == 2
    assert len(server.posts) == 1 + FAST_RETRY.max_attempts  # gave up after its retries
    accepted = {p for (_h, p) in server.stored}

    server.fail_from_post = None
    server.posts.clear()
    report = push([models], batch_size=2)
    resent = {p for post in server.posts for p in post}
    assert resent.isdisjoint(accepted) and len(resent) == 3
    assert (report.sent, report.skipped_unchanged) == (3, 2)
    for f in models.glob("*.safetensors"):
        assert server.sha256_of(f) == sha256(f)


def test_429_retry_after_is_honoured(push, server, models):
    server.scripted.append((429, {"Retry-After": "7"}, {"detail": "slow down"}))
    report = push([models])
    assert push.sleeps == [7.0]
    assert (report.created, report.requests) == (5, 2)


def test_bad_token_exits_2_with_the_message(tmp_path, server, models, capsys):
    status = push_client.main([
        str(models), "--server", server.url, "--token", "wrong", "--host", "box",
        "--state", str(tmp_path / "s.json"), "--cache", str(tmp_path / "c.sqlite3"), "--no-progress",
    ])
    assert status == 2
    assert "the server refused the token" in capsys.readouterr().err
    assert not server.stored


def test_bad_token_raises_auth_error_without_retrying(push, server, models):
    with pytest.raises(PushAuthError):
        push([models], token="wrong")
    assert push.sleeps == []


def test_400_is_final_and_shows_the_server_message(push, server, models):
    server.scripted.append((400, {}, {"error": {"code": "bad_body", "message": "host is too long", "detail": None}}))
    with pytest.raises(PushRefusedError, match="host is too long"):
        push([models])
    assert push.sleeps == []


def test_refused_record_is_reported_and_sent_again_next_time(push, server, models):
    bad = models / "m3.safetensors"
    server.refuse_paths = {str(bad)}
    report = push([models])
    assert report.failed == [(str(bad), "refused by the server: refused by the stand-in")]
    assert report.created == 4

    server.refuse_paths = set()
    report = push([models])
    assert server.posts[-1] == [str(bad)]
    assert (report.sent, report.created, report.skipped_unchanged, report.failed) == (1, 1, 4, [])


def test_cli_exit_status_1_when_a_record_is_refused(tmp_path, server, models, capsys):
    server.refuse_paths = {str(models / "m1.safetensors")}
    status = push_client.main([
        str(models), "--server", server.url, "--token", GOOD_TOKEN, "--host", "box",
        "--state", str(tmp_path / "s.json"), "--cache", str(tmp_path / "c.sqlite3"), "--no-progress",
    ])
    captured = capsys.readouterr()
    assert status == 1
    assert "m1.safetensors: refused by the server" in captured.err
    assert "4 created" in captured.out


@pytest.mark.timeout(30)
def test_fifo_in_folder_is_skipped_and_named_fifo_fails_without_blocking(push, server, models):
    fifo = models / "pipe.safetensors"
    os.mkfifo(fifo)
    report = push([models])
    assert (report.created, report.failed) == (5, [])

    report = push([fifo])
    assert len(report.failed) == 1
    path, why = report.failed[0]
    assert path == str(fifo) and "FIFO" in why
    assert report.sent == 0


def test_missing_path_is_reported(push, tmp_path):
    report = push([tmp_path / "nope"])
    assert report.failed == [(str(tmp_path / "nope"), "no such file or folder")]


def make_diffusers(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"]}))
    unet = write_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors", seed=1)
    te = write_safetensors(folder / "text_encoder" / "model.safetensors", seed=2)
    (folder / "unet" / "config.json").write_text("{}")
    return unet, te


def folder_digest(files: list[Path]) -> str:
    """InvokeAI's folder hash, computed here: BLAKE3 over the members' BLAKE3 hex, in path order."""
    return blake3.blake3(b"".join(blake3.blake3(f.read_bytes()).hexdigest().encode() for f in files)).hexdigest()


def test_diffusers_folder_is_pushed_as_one_folder_record(push, server, tmp_path):
    folder = tmp_path / "sd15"
    unet, te = make_diffusers(folder)
    write_safetensors(tmp_path / "lora.safetensors", seed=3)
    report = push([tmp_path])
    assert (report.sent, report.created, report.failed) == (2, 2, [])
    assert {p for (_h, p) in server.stored} == {str(folder), str(tmp_path / "lora.safetensors")}
    record = server.stored[("box", str(folder))]
    assert record["kind"] == "folder" and record["format"] == "diffusers"
    assert record["folder"]["digest"] == folder_digest([te, unet])  # "text_encoder/..." sorts first
    members = {m["relative_path"]: m["hashes"]["SHA256"].lower() for m in record["folder"]["members"]}
    assert members == {"unet/diffusion_pytorch_model.safetensors": sha256(unet), "text_encoder/model.safetensors": sha256(te)}
    assert record["safety"]["verdict"] == "safe"
    assert set(record["fingerprint"]["components"]) == {"unet", "text_encoder"}


def test_unchanged_folder_is_skipped_and_a_changed_or_added_member_resends_it(push, server, tmp_path):
    folder = tmp_path / "sd15"
    unet, te = make_diffusers(folder)
    push([folder])
    report = push([folder])
    assert (report.sent, report.skipped_unchanged, report.requests) == (0, 1, 0)

    (folder / "unet" / "config.json").write_text('{"changed": true}')  # not a weight file: no re-send
    assert push([folder]).skipped_unchanged == 1

    write_safetensors(unet, seed=42)
    report = push([folder])
    assert (report.sent, report.updated) == (1, 1)
    assert server.posts[-1] == [str(folder)]
    assert server.stored[("box", str(folder))]["folder"]["digest"] == folder_digest([te, unet])

    extra = write_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors", seed=7)
    report = push([folder])
    assert (report.sent, report.updated) == (1, 1)
    assert server.stored[("box", str(folder))]["folder"]["digest"] == folder_digest([te, unet, extra])
    assert push([folder]).skipped_unchanged == 1


def test_folder_state_entry_replaces_the_old_per_file_entries(push, server, tmp_path):
    folder = tmp_path / "sd15"
    unet, _te = make_diffusers(folder)
    state_path = tmp_path / "state.json"
    # What an older client left behind: one entry per weight file.
    old_entry = {"device": 0, "inode": 0, "size": 0, "mtime_ns": 0, "sha256": "0" * 64, "analysed": True, "pushed_at": 0}
    target = f"box {hashlib.sha256(GOOD_TOKEN.encode()).hexdigest()[:16]}"
    state_path.write_text(json.dumps({"version": 1, "server": server.url,
                                      "targets": {target: {"files": {str(unet): old_entry}}}}))
    push([folder])
    files = json.loads(state_path.read_text())["targets"][target]["files"]
    assert set(files) == {str(folder)}
    assert files[str(folder)]["kind"] == "folder"
    assert files[str(folder)]["folder_digest"] == server.stored[("box", str(folder))]["folder"]["digest"]


def test_folder_pushed_without_analysis_is_sent_again_with_it(push, server, tmp_path):
    folder = tmp_path / "sd15"
    make_diffusers(folder)
    push([folder], analyse=False)
    record = server.stored[("box", str(folder))]
    assert (record["format"], record["fingerprint"], record["safety"]) == ("diffusers", None, None)
    assert push([folder], analyse=False).skipped_unchanged == 1
    assert push([folder]).sent == 1
    assert server.stored[("box", str(folder))]["fingerprint"]["content_id"]


def test_refused_folder_is_reported_and_sent_again_next_time(push, server, tmp_path):
    folder = tmp_path / "sd15"
    make_diffusers(folder)
    server.refuse_paths = {str(folder)}
    report = push([folder])
    assert report.failed == [(str(folder), "refused by the server: refused by the stand-in")]
    server.refuse_paths = set()
    assert (push([folder]).created, len(server.posts)) == (1, 2)


@pytest.mark.timeout(30)
def test_fifo_among_a_folders_weight_files_fails_the_folder_without_blocking(push, server, tmp_path):
    folder = tmp_path / "sd15"
    make_diffusers(folder)
    os.mkfifo(folder / "vae.safetensors")
    report = push([tmp_path])
    assert report.sent == 0 and len(report.failed) == 1
    path, why = report.failed[0]
    assert path == str(folder) and "FIFO" in why


def test_no_analyse_then_analyse_resends_with_analysis(push, server, models):
    push([models], analyse=False)
    stored = server.stored[("box", str(models / "m0.safetensors"))]
    assert (stored["format"], stored["fingerprint"], stored["safety"]) == ("safetensors", None, None)
    assert push([models], analyse=False).skipped_unchanged == 5

    report = push([models])
    assert report.sent == 5
    assert server.stored[("box", str(models / "m0.safetensors"))]["fingerprint"]["content_id"]


def test_another_host_name_is_pushed_again(push, server, models):
    push([models])
    report = push([models], host="other")
    assert (report.sent, report.skipped_unchanged) == (5, 0)
    assert server.sha256_of(models / "m0.safetensors", host="other") == sha256(models / "m0.safetensors")


def test_batches_respect_batch_size(push, server, models):
    report = push([models], batch_size=2)
    assert [len(p) for p in server.posts] == [2, 2, 1]
    assert report.requests == 3


def test_unreachable_server_gives_up_after_retries(push, models, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the push: nothing listens there
    with pytest.raises(PushUnavailableError, match="cannot reach"):
        push([models], server=f"http://127.0.0.1:{port}")
    assert len(push.sleeps) == FAST_RETRY.max_attempts - 1


def test_state_file_is_valid_json_recording_what_was_accepted(push, server, models, tmp_path):
    push([models])
    doc = json.loads((tmp_path / "state.json").read_text())
    (target,) = doc["targets"].values()
    entry = target["files"][str(models / "m0.safetensors")]
    st = (models / "m0.safetensors").stat()
    assert (entry["device"], entry["inode"], entry["size"], entry["mtime_ns"]) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    assert entry["sha256"] == sha256(models / "m0.safetensors")
    assert GOOD_TOKEN not in (tmp_path / "state.json").read_text()


def test_unreadable_state_file_means_sending_everything_again(push, server, models, tmp_path):
    push([models])
    (tmp_path / "state.json").write_text("{not json")
    messages: list[str] = []
    report = push([models], on_message=messages.append)
    assert (report.sent, report.unchanged) == (5, 5)
    assert any("unreadable push state" in m for m in messages)
    assert push([models]).skipped_unchanged == 5  # and it was rewritten


def test_two_runs_cannot_share_one_state_file(push, models, tmp_path):
    import fcntl

    from workers.push.report import PushUsageError

    with open(tmp_path / "state.json.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(PushUsageError, match="another push is already using"):
            push([models])


def test_standalone_module_runs_without_django(server, models, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "MODELXREF_TOKEN": GOOD_TOKEN}
    args = [str(models), "--server", server.url, "--host", "box", "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "workers.push_client", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "5 created" in done.stdout
    assert all(server.sha256_of(f) == sha256(f) for f in models.glob("*.safetensors"))
    assert list((home / ".cache" / "modelxref").glob("push-state-127.0.0.1_*.json"))
    assert (home / ".cache" / "modelxref" / "hash-cache.sqlite3").exists()

    check = ("import sys; from workers import push_client; rc = push_client.main(sys.argv[1:]); "
             "assert not any(m == 'django' or m.startswith(('django.', 'models_catalog')) for m in sys.modules), 'Django was imported'; "
             "sys.exit(rc)")
    again = subprocess.run([sys.executable, "-c", check, *args], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "5 skipped" in again.stdout


def test_manage_py_push_works_without_touching_the_database(server, models, tmp_path):
    # No django_db mark: pytest-django fails any database access in this test.
    import io

    from django.core.management import CommandError, call_command

    common = [str(models), "--server", server.url, "--token", GOOD_TOKEN, "--host", "box",
              "--state", str(tmp_path / "s.json"), "--cache", str(tmp_path / "c.sqlite3"), "--no-progress"]
    out = io.StringIO()
    call_command("push", *common, stdout=out, stderr=io.StringIO())
    assert "5 created" in out.getvalue()
    server.refuse_paths = {str(models / "m4.safetensors")}
    (models / "m4.safetensors").touch()
    with pytest.raises(CommandError) as caught:
        call_command("push", *common, stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 1


# --------------------------------------------------------------------------
# Against the real endpoint


def _push_route_exists() -> bool:
    from django.urls import Resolver404, resolve

    try:
        match = resolve("/api/v1/files/push/")
    except Resolver404:
        return False
    return match.route.endswith("files/push/")  # /api/ also has a catch-all 404 route


@pytest.mark.django_db(transaction=True)
def test_push_to_the_real_endpoint_creates_pushed_local_files(live_server, models, tmp_path):
    assert _push_route_exists(), "models_catalog/api_urls.py lost the route for /api/v1/files/push/"
    from django.contrib.auth import get_user_model

    from models_catalog.models import LocalFile
    from models_catalog.services.tokens import api_token_create

    user = get_user_model().objects.create_user("pusher", password="pw-pusher-123")
    _, key = api_token_create(user=user, name="push client test")
    folder = tmp_path / "diffusers" / "sd15"
    unet, te = make_diffusers(folder)
    report = push_paths([str(models), str(folder)], server=live_server.url, token=key, host="gpu-box",
                        state_path=tmp_path / "state.json", cache=tmp_path / "cache.sqlite3", progress=False,
                        sleep=lambda s: None, retry=FAST_RETRY, on_message=lambda text: None)
    assert (report.created, report.failed) == (6, [])
    rows = {lf.path: lf for lf in LocalFile.objects.filter(owner=user, origin="pushed", host="gpu-box").select_related("hashes")}
    assert set(rows) == {str(f) for f in models.glob("*.safetensors")} | {str(folder)}
    pushed_folder = rows.pop(str(folder))
    for path, lf in rows.items():
        assert lf.hashes.sha256 == sha256(Path(path)) and not lf.is_folder
    assert pushed_folder.is_folder and pushed_folder.format == "diffusers" and pushed_folder.content_id
    assert pushed_folder.hashes.folder_digest == folder_digest([te, unet])
    # Family and kind travel with the fingerprint: the server stores what this machine's detector saw.
    assert (pushed_folder.architecture_kind, pushed_folder.architecture["kind_label"]) == ("diffusers", "diffusers pipeline")
    assert {m.relative_path: m.sha256 for m in pushed_folder.members.all()} == {
        "unet/diffusion_pytorch_model.safetensors": sha256(unet), "text_encoder/model.safetensors": sha256(te)}

    again = push_paths([str(models), str(folder)], server=live_server.url, token=key, host="gpu-box",
                       state_path=tmp_path / "state.json", cache=tmp_path / "cache.sqlite3", progress=False,
                       sleep=lambda s: None, retry=FAST_RETRY, on_message=lambda text: None)
    assert (again.sent, again.skipped_unchanged) == (0, 6)

    # Forgotten state: everything is sent again and the server finds all of it unchanged.
    resent = push_paths([str(models), str(folder)], server=live_server.url, token=key, host="gpu-box",
                        state_path=tmp_path / "fresh-state.json", cache=tmp_path / "cache.sqlite3", progress=False,
                        sleep=lambda s: None, retry=FAST_RETRY, on_message=lambda text: None)
    assert (resent.sent, resent.unchanged, resent.failed) == (6, 6, [])

    with pytest.raises(PushAuthError, match="the server refused the token"):
        push_paths([str(models)], server=live_server.url, token="not-a-token", host="gpu-box",
                   state_path=tmp_path / "other-state.json", cache=tmp_path / "cache.sqlite3", progress=False,
                   sleep=lambda s: None, retry=FAST_RETRY, on_message=lambda text: None)
