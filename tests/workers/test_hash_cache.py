"""workers.hash_cache: identity-keyed SQLite cache of file hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workers import hash_engine
from workers.hash_cache import HashCache, HashCacheError, hash_file_cached
from workers.hashing import FileIdentity, HashingError, file_identity, hash_file, hash_folder

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path):
    c = HashCache(tmp_path / "cache" / "hashes.sqlite")
    yield c
    c.close()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(5000))
    return path


@pytest.fixture
def forbid_reads(monkeypatch):
    """After this is armed, any attempt to open a file for hashing fails the test."""

    def arm():
        def no_open(*args, **kwargs):
            raise AssertionError(f"file was opened: {args[0]}")

        monkeypatch.setattr(hash_engine.os, "open", no_open)

    return arm


def test_miss_then_hit_returns_the_same_hashes(cache, model):
    first, hit1 = hash_file_cached(model, cache=cache)
    second, hit2 = hash_file_cached(model, cache=cache)
    assert (hit1, hit2) == (False, True)
    assert second == first
    assert first.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()


def test_a_hit_does_not_read_the_file(cache, model, forbid_reads):
    expected, _ = hash_file_cached(model, cache=cache)
    forbid_reads()
    assert hash_file_cached(model, cache=cache) == (expected, True)


def test_no_cache_always_hashes(model):
    assert hash_file_cached(model, cache=None) == (hash_file(model), False)


def test_mtime_change_invalidates(cache, model):
    hash_file_cached(model, cache=cache)
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # 1 ns is enough
    _, hit = hash_file_cached(model, cache=cache)
    assert hit is False


def test_size_change_invalidates_and_rehashes_new_content(cache, model):
    hash_file_cached(model, cache=cache)
    st = model.stat()
    with open(model, "ab") as f:
        f.write(b"tail")
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: size alone must invalidate
    hashes, hit = hash_file_cached(model, cache=cache)
    assert hit is False
    assert hashes.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()


def test_rename_keeps_the_entry_but_a_copy_with_same_mtime_does_not(cache, model, tmp_path):
    hash_file_cached(model, cache=cache)
    renamed = tmp_path / "renamed.safetensors"
    model.rename(renamed)
    assert hash_file_cached(renamed, cache=cache)[1] is True
    copied = tmp_path / "copy.safetensors"
    shutil.copy2(renamed, copied)  # keeps mtime: A1111's cache would trust it, we don't
    assert copied.stat().st_mtime_ns == renamed.stat().st_mtime_ns
    assert hash_file_cached(copied, cache=cache)[1] is False


def test_entries_persist_and_are_shared_between_processes(cache, model, tmp_path):
    hashes, _ = hash_file_cached(model, cache=cache)
    code = (
        "import sys; from workers.hash_cache import HashCache, hash_file_cached;"
        f"h, hit = hash_file_cached({str(model)!r}, cache=HashCache({str(cache.path)!r}));"
        "print(hit, h.sha256)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", hashes.sha256]


def test_safe_to_share_between_threads(cache, tmp_path):
    paths = []
    for i in range(24):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(100 + i))
        paths.append(p)
    errors = []

    def work(chunk):
        try:
            for p in chunk:
                hash_file_cached(p, cache=cache)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(paths[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(hash_file_cached(p, cache=cache)[1] for p in paths)


def test_uses_wal_mode(cache):
    conn = sqlite3.connect(cache.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_unsigned_64_bit_device_and_inode_round_trip(cache, model):
    hashes = hash_file(model)
    identity = FileIdentity(device=2**64 - 1, inode=2**63 + 5, size=hashes.size, mtime_ns=123)
    cache.put(identity, hashes)
    assert cache.get(identity) == hashes
    assert cache.get(FileIdentity(device=2**64 - 1, inode=2**63 + 5, size=hashes.size, mtime_ns=124)) is None


def test_damaged_row_is_a_miss_not_a_crash(cache, model):
    hash_file_cached(model, cache=cache)
    conn = sqlite3.connect(cache.path)
    with conn:
        conn.execute("UPDATE file_hashes SET hashes = '{not json'")
    conn.close()
    assert cache.get(file_identity(model)) is None
    hashes, hit = hash_file_cached(model, cache=cache)
    assert hit is False and hashes == hash_file(model)


def test_put_refuses_hashes_of_another_size(cache, model):
    hashes = hash_file(model)
    with pytest.raises(HashCacheError):
        cache.put(FileIdentity(device=1, inode=2, size=hashes.size + 1, mtime_ns=0), hashes)


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HashCacheError, match="cannot open hash cache"):
        HashCache(bad)
    assert issubclass(HashCacheError, HashingError)


def test_special_files_are_refused_before_the_cache_is_consulted(cache, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(HashingError, match="FIFO"):
        hash_file_cached(fifo, cache=cache)


def test_folder_hashing_uses_the_cache(cache, tmp_path, forbid_reads):
    folder = tmp_path / "pipe-folder"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(3000))
    (folder / "vae.bin").write_bytes(os.urandom(2000))
    first = hash_folder(folder, cache=cache)
    forbid_reads()
    calls = []
    assert hash_folder(folder, lambda done, total: calls.append((done, total)), cache=cache) == first
    assert calls[-1] == (first.size, first.size)


def test_a_hit_still_reports_completion(cache, model):
    hash_file_cached(model, cache=cache)
    calls = []
    hashes, hit = hash_file_cached(model, cache=cache, progress=lambda done, total: calls.append((done, total)))
    assert hit and calls == [(hashes.size, hashes.size)]


def _open_cache(path, barrier, results):
    from workers.hash_cache import HashCache, HashCacheError

    barrier.wait()
    try:
        HashCache(path)
        results.put("ok")
    except HashCacheError as exc:
        results.put(str(exc))


def test_processes_opening_a_new_cache_together_all_succeed(tmp_path):
    """Worker processes start together and create the cache at once: switching to WAL takes a lock
    SQLite does not wait for, which used to fail with "database is locked" about 4 times in 10."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    failures = []
    for trial in range(20):
        path = tmp_path / f"c{trial}.sqlite3"
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_cache, args=(path, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        failures += [r for r in (results.get(timeout=5) for _ in procs) if r != "ok"]
    assert failures == []
