import builtins
import hashlib
import io
import os

import pytest
from huggingface_hub import hf_hub_download

from tests.fakes.huggingface import fake_hub  # noqa: F401
from workers.sources import huggingface as hf
from workers.sources.huggingface import CachedHubFile, is_hf_cache_path, scan_hf_cache, scan_hf_cache_detailed

COMMIT = "a" * 40
OLD_COMMIT = "b" * 40
WEIGHTS = b"weights" * 1000
CONFIG = b'{"a": 1}\n'


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _link(snapshot_file, blob_name):
    """Relative link like huggingface_hub makes: up to the repo folder, then blobs/<etag>."""
    snapshot_file.parent.mkdir(parents=True, exist_ok=True)
    repo_dir = next(p for p in snapshot_file.parents if p.name.startswith(("models--", "datasets--")))
    rel = os.path.relpath(repo_dir / "blobs" / blob_name, snapshot_file.parent)
    os.symlink(rel, snapshot_file)


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "hub"
    repo = root / "models--org--model"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs" / _sha256(WEIGHTS)).write_bytes(WEIGHTS)
    (repo / "blobs" / _git_sha1(CONFIG)).write_bytes(CONFIG)
    (repo / "blobs" / (_sha256(b"partial") + ".incomplete")).write_bytes(b"part")
    snap = repo / "snapshots" / COMMIT
    _link(snap / "model.safetensors", _sha256(WEIGHTS))
    _link(snap / "unet" / "config.json", _git_sha1(CONFIG))
    _link(snap / "gone.safetensors", _sha256(b"never downloaded"))  # broken link
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"not part of the cache")
    os.symlink(secret, snap / "escape.bin")
    _link(repo / "snapshots" / OLD_COMMIT / "model.safetensors", _sha256(WEIGHTS))  # same blob, older commit

    data = b"x,y\n1,2\n"
    drepo = root / "datasets--org--data"
    (drepo / "blobs").mkdir(parents=True)
    (drepo / "blobs" / _sha256(data)).write_bytes(data)
    _link(drepo / "snapshots" / COMMIT / "train.csv", _sha256(data))
    (root / "version.txt").write_text("1")  # cache-level files are not repos
    return root


@pytest.fixture
def no_reads(monkeypatch):
    """Fail loudly if anything opens or hashes a file while the scan runs."""

    def refuse(*a, **k):
        raise AssertionError(f"unexpected read/hash: {a!r}")

    def install():
        for target, name in ((builtins, "open"), (io, "open"), (os, "open")):
            monkeypatch.setattr(target, name, refuse)
        for name in ("sha256", "sha1", "new"):
            monkeypatch.setattr(hashlib, name, refuse)
            monkeypatch.setattr(hf.hashlib, name, refuse)

    return install


def test_scan_reads_hashes_repo_and_revision_from_the_layout_without_reading_blobs(cache, no_reads, monkeypatch):
    expected_weights_sha, expected_config_sha1 = _sha256(WEIGHTS), _git_sha1(CONFIG)
    expected_data_sha = _sha256(b"x,y\n1,2\n")
    no_reads()
    with pytest.raises(AssertionError):  # the trap is armed
        (cache / "version.txt").read_bytes()

    files = scan_hf_cache(cache)

    monkeypatch.undo()
    by_key = {(f.repo_id, f.revision, f.path): f for f in files}
    assert set(by_key) == {
        ("org/model", COMMIT, "model.safetensors"),
        ("org/model", COMMIT, "unet/config.json"),
        ("org/model", OLD_COMMIT, "model.safetensors"),
        ("org/data", COMMIT, "train.csv"),
    }
    weights = by_key[("org/model", COMMIT, "model.safetensors")]
    assert weights == CachedHubFile(
        repo_id="org/model",
        repo_type="model",
        revision=COMMIT,
        path="model.safetensors",
        snapshot_path=str(cache / "models--org--model" / "snapshots" / COMMIT / "model.safetensors"),
        blob_path=os.path.realpath(cache / "models--org--model" / "blobs" / expected_weights_sha),
        sha256=expected_weights_sha,
        git_sha1=None,
        size=len(WEIGHTS),
    )
    config = by_key[("org/model", COMMIT, "unet/config.json")]
    assert (config.sha256, config.git_sha1, config.size) == (None, expected_config_sha1, len(CONFIG))
    data = by_key[("org/data", COMMIT, "train.csv")]
    assert (data.repo_type, data.sha256) == ("dataset", expected_data_sha)


def test_scan_reports_incomplete_broken_and_escaping_entries_as_skipped(cache):
    scan = scan_hf_cache_detailed(cache)
    reasons = {os.path.basename(s.path): s.reason for s in scan.skipped}
    assert "incomplete" in reasons[_sha256(b"partial") + ".incomplete"]
    assert "broken link" in reasons["gone.safetensors"]
    assert "outside" in reasons["escape.bin"]
    assert not any(f.path in ("gone.safetensors", "escape.bin") for f in scan.files)


def test_empty_blob_named_after_non_empty_content_is_skipped_as_truncated(cache):
    repo = cache / "models--org--model"
    truncated = _sha256(b"big file")
    (repo / "blobs" / truncated).write_bytes(b"")
    _link(repo / "snapshots" / COMMIT / "trunc.safetensors", truncated)
    empty = _sha256(b"")
    (repo / "blobs" / empty).write_bytes(b"")
    _link(repo / "snapshots" / COMMIT / "empty.txt", empty)

    scan = scan_hf_cache_detailed(cache)

    assert "truncated" in {os.path.basename(s.path): s.reason for s in scan.skipped}["trunc.safetensors"]
    assert any(f.path == "empty.txt" and f.size == 0 for f in scan.files)


def test_copied_snapshot_files_have_no_free_hash(cache):
    (cache / "models--org--model" / "snapshots" / COMMIT / "copied.bin").write_bytes(b"copy")
    scan = scan_hf_cache_detailed(cache)
    assert "copied" in {os.path.basename(s.path): s.reason for s in scan.skipped}["copied.bin"]


def test_folders_that_are_not_repo_caches_are_ignored(tmp_path):
    for name in ("models--", "models--a--b--c", "checkpoints--org--x", "random"):
        (tmp_path / name / "snapshots" / COMMIT).mkdir(parents=True)
    assert scan_hf_cache_detailed(tmp_path).files == []
    assert scan_hf_cache(tmp_path / "does-not-exist") == []


def test_is_hf_cache_path_identifies_snapshot_and_blob_paths_for_free(cache, no_reads, monkeypatch):
    snap = cache / "models--org--model" / "snapshots" / COMMIT / "unet" / "config.json"
    blob = cache / "models--org--model" / "blobs" / _sha256(WEIGHTS)
    os.utime(cache / "models--org--model" / "snapshots" / OLD_COMMIT, ns=(1, 1))  # older snapshot
    no_reads()

    from_snapshot = is_hf_cache_path(snap)
    from_blob = is_hf_cache_path(blob)
    broken = is_hf_cache_path(snap.parent.parent / "gone.safetensors")
    outside = is_hf_cache_path(cache.parent / "outside.txt")

    monkeypatch.undo()
    assert (from_snapshot.repo_id, from_snapshot.path, from_snapshot.git_sha1) == (
        "org/model",
        "unet/config.json",
        _git_sha1(CONFIG),
    )
    assert (from_blob.revision, from_blob.path, from_blob.sha256) == (COMMIT, "model.safetensors", _sha256(WEIGHTS))
    assert broken is None and outside is None


def test_a_real_hf_hub_download_cache_is_recognised(fake_hub, tmp_path):
    weights = b"\x00" * 5000 + b"real download"
    commit = fake_hub.add_repo("org/real", {"model.safetensors": weights, "config.json": CONFIG})
    paths = [
        hf_hub_download("org/real", name, endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
        for name in ("model.safetensors", "config.json")
    ]

    files = {f.path: f for f in scan_hf_cache(tmp_path)}

    assert files["model.safetensors"].sha256 == _sha256(weights)
    assert files["model.safetensors"].revision == commit
    assert files["config.json"].git_sha1 == _git_sha1(CONFIG)
    assert is_hf_cache_path(paths[0]) == files["model.safetensors"]
    assert is_hf_cache_path(os.path.realpath(paths[0])).sha256 == _sha256(weights)
