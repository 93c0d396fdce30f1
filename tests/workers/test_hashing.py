"""workers.hashing: every hash against independent computations (hashlib, zlib, blake3)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import blake3
import pytest

from workers import hash_engine
from workers.hashing import (
    FileChangedError,
    ComputedHashes,
    FolderHashes,
    HashesFormatError,
    HashingError,
    file_identity,
    hash_file,
    hash_folder,
    is_diffusers_folder,
)

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_hashes(data: bytes) -> dict:
    """The definitions in /work/shared/reference/hashes.md, computed the slow obvious way."""
    autov3 = None
    if len(data) >= 8:
        n = int.from_bytes(data[:8], "little")
        start = 8 if n >= 16 * MiB else 8 + n
        autov3 = hashlib.sha256(data[start:]).hexdigest()
    return {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "autov1": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8] if len(data) >= 2 * MiB else None,
        "autov3_full": autov3,
        "crc32": zlib.crc32(data).to_bytes(4, "little").hex(),
        "blake3": blake3.blake3(data).hexdigest(),
    }


def computed(h: ComputedHashes) -> dict:
    return {k: getattr(h, k) for k in ("size", "sha256", "autov1", "autov3_full", "crc32", "blake3")}


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def safetensors_bytes(payload: bytes, metadata: dict | None = None, *, pad_to: int = 8) -> bytes:
    header = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * ((-(8 + len(raw))) % pad_to)
    return len(raw).to_bytes(8, "little") + raw + payload


def write(tmp_path: Path, data: bytes, name: str = "model.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


SIZES = [0, 1, 7, 8, MiB - 1, MiB, MiB + 1, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1]


@pytest.mark.parametrize("size", SIZES)
def test_every_hash_matches_independent_computation(tmp_path, size):
    data = random_bytes(size)
    assert computed(hash_file(write(tmp_path, data))) == reference_hashes(data)


def test_multi_buffer_file_not_a_multiple_of_the_buffer_size(tmp_path):
    data = safetensors_bytes(random_bytes(2 * hash_engine.DEFAULT_BUFFER_SIZE + 12345))
    assert len(data) % hash_engine.DEFAULT_BUFFER_SIZE != 0
    assert computed(hash_file(write(tmp_path, data))) == reference_hashes(data)


@pytest.mark.parametrize("size", [2 * MiB - 1, 2 * MiB + 1, 3 * MiB + 5])
@pytest.mark.parametrize("buffer_size", [65536 + 17, 4096, 1000 * 1000])
def test_small_odd_buffers_straddle_autov1_window_and_header(tmp_path, size, buffer_size):
    data = safetensors_bytes(random_bytes(size), {"k": "v" * 5000})  # header spans buffers
    h = hash_file(write(tmp_path, data), buffer_size=buffer_size)
    assert computed(h) == reference_hashes(data)
    assert h.autov3_full == hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()


@pytest.mark.parametrize("size, buffer_size", [(3 * MiB, 1 * MiB), (512 * 1024, hash_engine.DEFAULT_BUFFER_SIZE)])
def test_the_test_only_pace_slows_reading_and_changes_no_hash(tmp_path, monkeypatch, size, buffer_size):
    """MODELXREF_TEST_HASH_BYTES_PER_SECOND lets the fault tests catch a worker mid-hash; off when unset."""
    import time

    data = safetensors_bytes(random_bytes(size))
    path = write(tmp_path, data)
    monkeypatch.setenv(hash_engine.TEST_PACE_ENV, str(4 * MiB))
    started = time.monotonic()
    h = hash_file(path, buffer_size=buffer_size)
    assert time.monotonic() - started >= 0.9 * len(data) / (4 * MiB)
    assert computed(h) == reference_hashes(data)
    monkeypatch.delenv(hash_engine.TEST_PACE_ENV)
    assert hash_engine._TestPace.from_env() is None


@pytest.mark.parametrize("buffer_size", [1, 2, 3, 7, 8, 9, 64])
def test_tiny_buffers(tmp_path, buffer_size):
    data = safetensors_bytes(random_bytes(3000), {"sshs_model_hash": "AB" * 32})
    h = hash_file(write(tmp_path, data), buffer_size=buffer_size)
    assert computed(h) == reference_hashes(data)
    assert h.embedded_model_hash == "ab" * 32


def test_hashes_md_test_vectors(tmp_path):
    form = hash_file(write(tmp_path, b"hello world")).civitai_form()
    assert form["SHA256"] == "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
    assert form["AutoV2"] == "B94D27B993"
    assert form["AutoV1"] is None
    assert form["CRC32"] == "85114A0D"
    assert form["BLAKE3"] == "D74981EFA70A0C880B8D8C1985D075DBCBF679B99A5F9914E5AAF96B831A9E24"


def test_autov3_of_a_real_safetensors_file_hashes_only_the_tensor_data(tmp_path):
    payload = random_bytes(100_000, seed=3)
    data = safetensors_bytes(payload, {"format": "pt"})
    h = hash_file(write(tmp_path, data, "lora.safetensors"))
    assert h.autov3_full == hashlib.sha256(payload).hexdigest()
    assert h.autov3 == hashlib.sha256(payload).hexdigest()[:12]
    assert h.autov3_full != h.sha256


def test_autov3_of_a_torch_saved_safetensors_layout(tmp_path):
    torch = pytest.importorskip("torch")
    tensor = torch.arange(1000, dtype=torch.float32)
    payload = tensor.numpy().tobytes()
    data = safetensors_bytes(payload)
    assert hash_file(write(tmp_path, data)).autov3_full == hashlib.sha256(payload).hexdigest()


def test_autov3_legacy_rule_hashes_from_byte_8_when_header_length_is_16_mib_or_more(tmp_path):
    body = random_bytes(5000)
    at_limit = write(tmp_path, (16 * MiB).to_bytes(8, "little") + body, "a.ckpt")
    assert hash_file(at_limit).autov3_full == hashlib.sha256(body).hexdigest()
    # Just under the limit the header "ends" past EOF: kohya hashes nothing.
    under = write(tmp_path, (16 * MiB - 1).to_bytes(8, "little") + body, "b.ckpt")
    assert hash_file(under).autov3_full == hashlib.sha256(b"").hexdigest()


def test_autov3_is_none_below_8_bytes_and_autov1_none_below_2_mib(tmp_path):
    h = hash_file(write(tmp_path, b"1234567"))
    assert (h.autov3_full, h.autov3, h.autov1) == (None, None, None)
    assert h.civitai_form()["AutoV3"] is None


def test_embedded_hashes_are_read_lowercased_and_never_used_as_computed(tmp_path):
    empty_sha = hashlib.sha256(b"").hexdigest().upper()  # a wrong value some trainers wrote
    data = safetensors_bytes(b"\x00" * 64, {"sshs_model_hash": empty_sha, "sshs_legacy_hash": "DEADBEEF"})
    h = hash_file(write(tmp_path, data, "lora.safetensors"))
    assert h.embedded_model_hash == empty_sha.lower()
    assert h.embedded_legacy_hash == "deadbeef"
    assert h.autov3_full == hashlib.sha256(b"\x00" * 64).hexdigest() != h.embedded_model_hash


@pytest.mark.parametrize(
    "data",
    [
        b"\x10\x00\x00\x00\x00\x00\x00\x00[not an object]!",  # byte 8 is not "{"
        (1000).to_bytes(8, "little") + b'{"__metadata__": {"sshs_model_hash": "ab"}}',  # N past EOF
        (20).to_bytes(8, "little") + b'{"__metadata__": 1}                 ' + b"x" * 10,
        (30).to_bytes(8, "little") + b'{"__metadata__": {"sshs_model_' + b"x" * 10,  # truncated JSON
        (4).to_bytes(8, "little") + b"{\xff\xfe}",  # not UTF-8
        safetensors_bytes(b"", {"sshs_model_hash": 12345}),  # not a string
        safetensors_bytes(b"", {"sshs_model_hash": "a" * 1000}),  # not a hash
    ],
)
def test_bad_headers_just_mean_no_embedded_hash(tmp_path, data):
    h = hash_file(write(tmp_path, data))
    assert (h.embedded_model_hash, h.embedded_legacy_hash) == (None, None)
    assert computed(h) == reference_hashes(data)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            hash_file(fifo)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():
        with open(fifo, "wb"):  # unblock the stuck open so the test run can end
            pass
        pytest.fail("hash_file blocked opening a FIFO")
    assert isinstance(outcome[0], HashingError)
    assert "FIFO" in str(outcome[0]) and str(fifo) in str(outcome[0])


def test_directory_missing_and_device_are_refused(tmp_path):
    with pytest.raises(HashingError, match="directory"):
        hash_file(tmp_path)
    with pytest.raises(HashingError, match="no such file"):
        hash_file(tmp_path / "missing.safetensors")
    if os.path.exists("/dev/null"):
        with pytest.raises(HashingError, match="character device"):
            hash_file("/dev/null")


def test_unreadable_file_gives_a_clear_error(tmp_path, monkeypatch):
    path = write(tmp_path, b"secret weights")
    real_open = os.open

    def deny(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(hash_engine.os, "open", deny)
    with pytest.raises(HashingError, match="permission denied"):
        hash_file(path)


def test_read_error_midway_is_a_hashing_error(tmp_path, monkeypatch):
    path = write(tmp_path, random_bytes(3 * MiB))

    def failing_readv(fd, buffers):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hash_engine.os, "readv", failing_readv)
    with pytest.raises(HashingError, match="read failed: Input/output error"):
        hash_file(path)


@pytest.mark.parametrize("size", [1000, 3 * MiB])  # inline and threaded paths
def test_file_modified_during_hashing_is_rehashed(tmp_path, size):
    path = write(tmp_path, random_bytes(size))
    calls = []

    def append_on_first_call(done, total):
        if not calls:
            with open(path, "ab") as f:
                f.write(b"more bytes")
        calls.append((done, total))

    h = hash_file(path, append_on_first_call, buffer_size=MiB)
    assert computed(h) == reference_hashes(path.read_bytes())
    assert h.size == size + len(b"more bytes")


def test_file_that_keeps_changing_raises_file_changed(tmp_path):
    path = write(tmp_path, random_bytes(3 * MiB))

    def append_every_time(done, total):
        with open(path, "ab") as f:
            f.write(b"x")

    with pytest.raises(FileChangedError, match="kept changing"):
        hash_file(path, append_every_time, buffer_size=MiB)


def test_same_size_rewrite_during_hashing_is_caught_by_mtime(tmp_path):
    path = write(tmp_path, random_bytes(3 * MiB))
    rewritten = []

    def rewrite_once(done, total):
        if not rewritten:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF  # same size, last byte not read yet
            path.write_bytes(bytes(data))
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            rewritten.append(True)

    h = hash_file(path, rewrite_once, buffer_size=MiB)
    assert computed(h) == reference_hashes(path.read_bytes())


def test_file_vanishing_during_hashing(tmp_path):
    path = write(tmp_path, random_bytes(3 * MiB))
    with pytest.raises(HashingError, match="vanished"):
        hash_file(path, lambda done, total: path.unlink(missing_ok=True), buffer_size=MiB)


def test_progress_reports_are_throttled_and_end_at_total(tmp_path):
    path = write(tmp_path, random_bytes(20 * MiB))
    calls = []
    hash_file(path, lambda done, total: calls.append((done, total)), buffer_size=64 * 1024)
    assert calls[-1] == (20 * MiB, 20 * MiB)
    assert all(total == 20 * MiB for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) < 20 * MiB // (64 * 1024)  # far fewer calls than buffers


def test_memory_stays_bounded_by_the_ring(tmp_path):
    code = (
        "import resource, sys; from workers.hashing import hash_file;"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"hash_file({str(tmp_path / 'big.bin')!r});"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    with open(tmp_path / "big.bin", "wb") as f:
        block = random_bytes(16 * MiB)
        for _ in range(12):  # 192 MiB
            f.write(block)
    grew_kib = int(subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, check=True, text=True).stdout)
    assert grew_kib * 1024 < hash_engine.RING_DEPTH * hash_engine.DEFAULT_BUFFER_SIZE + 32 * MiB


def test_file_identity_comes_from_stat(tmp_path):
    path = write(tmp_path, b"abc")
    st = os.stat(path)
    ident = file_identity(path)
    assert (ident.device, ident.inode, ident.size, ident.mtime_ns) == (st.st_dev, st.st_ino, 3, st.st_mtime_ns)
    with pytest.raises(HashingError):
        file_identity(tmp_path)


def test_civitai_form_json_round_trip_and_derived_hashes(tmp_path):
    data = safetensors_bytes(random_bytes(2 * MiB + 3), {"sshs_model_hash": "Ab" * 32})
    h = hash_file(write(tmp_path, data))
    ref = reference_hashes(data)
    assert h.autov2 == ref["sha256"][:10]
    assert h.civitai_form() == {
        "SHA256": ref["sha256"].upper(),
        "AutoV1": ref["autov1"].upper(),
        "AutoV2": ref["sha256"][:10].upper(),
        "AutoV3": ref["autov3_full"][:12].upper(),
        "CRC32": ref["crc32"].upper(),
        "BLAKE3": ref["blake3"].upper(),
    }
    doc = json.loads(json.dumps(h.to_json()))
    assert doc["size"] == len(data) and doc["autov3_full"] == ref["autov3_full"]
    assert doc["embedded"] == {"sshs_model_hash": "ab" * 32, "sshs_legacy_hash": None}
    assert ComputedHashes.from_json(doc) == h


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(SHA256="xyz"),
        lambda d: d.update(size=-1),
        lambda d: d.update(size=True),
        lambda d: d.update(AutoV2="0000000000"),
        lambda d: d.update(AutoV1=None),  # size >= 2 MiB needs one
        lambda d: d.update(autov3_full=None),
        lambda d: d.update(CRC32="123"),
        lambda d: d.update(embedded="nope"),
        lambda d: d.pop("BLAKE3"),
    ],
)
def test_from_json_rejects_malformed_records(tmp_path, damage):
    doc = hash_file(write(tmp_path, random_bytes(2 * MiB))).to_json()
    damage(doc)
    with pytest.raises(HashesFormatError):
        ComputedHashes.from_json(doc)
    assert issubclass(HashesFormatError, HashingError)


def test_from_json_accepts_upper_or_lower_case(tmp_path):
    h = hash_file(write(tmp_path, b"hello world"))
    doc = h.to_json()
    doc = {k: (v.lower() if isinstance(v, str) else v) for k, v in doc.items()}
    assert ComputedHashes.from_json(doc) == h


# --- folders ---------------------------------------------------------------


def invokeai_reference_digest(folder: Path) -> str:
    """InvokeAI ModelHash._hash_dir with blake3_single, re-implemented from its source."""
    paths = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith((".ckpt", ".safetensors", ".bin", ".pt", ".pth")):
                paths.append(Path(root, name))
    composite = blake3.blake3()
    for p in sorted(paths):
        composite.update(blake3.blake3(p.read_bytes()).hexdigest().encode("utf-8"))
    return composite.hexdigest()


def make_diffusers_folder(root: Path) -> Path:
    folder = root / "sd15-diffusers"
    files = {
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
        "unet/diffusion_pytorch_model.safetensors": safetensors_bytes(random_bytes(3000, 1)),
        "vae/diffusion_pytorch_model.bin": random_bytes(2000, 2),
        "text_encoder/model.safetensors": safetensors_bytes(random_bytes(1000, 3)),
        "text_encoder/config.json": b"{}",
        "a-b.pt": random_bytes(10, 4),  # "a-b" sorts before "a/..." as strings, after as paths
        "a/b.pth": random_bytes(10, 5),
        "extra/quant.gguf": random_bytes(50, 6),  # a member, but not in InvokeAI's digest
        "scheduler/scheduler_config.json": b"{}",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    outside = root / "shared-blob"
    outside.write_bytes(random_bytes(500, 7))
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "linked.safetensors").symlink_to(outside)  # HF cache snapshots are symlinks
    return folder


def test_folder_digest_matches_invokeai(tmp_path):
    folder = make_diffusers_folder(tmp_path)
    result = hash_folder(folder)
    assert result.digest == invokeai_reference_digest(folder)
    assert result.invokeai_hash == "blake3:" + result.digest


def test_folder_members_sizes_and_order(tmp_path):
    folder = make_diffusers_folder(tmp_path)
    result = hash_folder(folder)
    rels = [m.relative_path for m in result.members]
    assert "extra/quant.gguf" in rels and "text_encoder/config.json" not in rels
    assert [Path(r) for r in rels] == sorted(Path(r) for r in rels)
    assert rels.index("a/b.pth") < rels.index("a-b.pt")
    for m in result.members:
        assert computed(m.hashes) == reference_hashes((folder / m.relative_path).read_bytes())
    assert result.size == sum((folder / r).stat().st_size for r in rels)
    assert [m.in_invokeai_digest for m in result.members if m.relative_path.endswith(".gguf")] == [False]


def test_folder_json_round_trip(tmp_path):
    result = hash_folder(make_diffusers_folder(tmp_path))
    doc = json.loads(json.dumps(result.to_json()))
    assert FolderHashes.from_json(doc) == result
    doc["digest"] = "0" * 64
    with pytest.raises(HashesFormatError):
        FolderHashes.from_json(doc)


def test_folder_progress_covers_all_members(tmp_path):
    folder = make_diffusers_folder(tmp_path)
    calls = []
    result = hash_folder(folder, lambda done, total: calls.append((done, total)))
    assert calls[-1] == (result.size, result.size)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_index.json").write_text("{}")
    with pytest.raises(HashingError, match="no weight files"):
        hash_folder(tmp_path / "empty")
    with pytest.raises(HashingError, match="not a folder"):
        hash_folder(write(tmp_path, b"x"))
    with pytest.raises(HashingError, match="no such folder"):
        hash_folder(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dangling.safetensors").symlink_to(tmp_path / "nowhere")
    with pytest.raises(HashingError, match="dangling.safetensors"):
        hash_folder(broken)


def test_is_diffusers_folder(tmp_path):
    folder = make_diffusers_folder(tmp_path)
    assert is_diffusers_folder(folder)
    assert not is_diffusers_folder(folder / "unet")
    assert not is_diffusers_folder(folder / "model_index.json")
    assert not is_diffusers_folder(tmp_path / "missing")


# --- command line and purity -------------------------------------------------


def test_command_line_prints_json_for_files_and_folders(tmp_path):
    path = write(tmp_path, safetensors_bytes(random_bytes(4000)), "m.safetensors")
    folder = make_diffusers_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, "-m", "workers.hashing", str(path), str(folder), str(tmp_path / "missing")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "no such file" in proc.stderr
    assert lines[0] == {"path": str(path), **hash_file(path).to_json()}
    assert lines[1]["digest"] == invokeai_reference_digest(folder)


def test_modules_import_nothing_from_django(tmp_path):
    code = (
        "import sys, workers.hashing, workers.hash_cache;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'models_catalog', 'torch')];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hash_folder_refuses_a_member_that_escapes_the_allowed_roots(tmp_path):
    from workers.hashing import HashingError, hash_folder

    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"secret")
    folder = tmp_path / "root" / "pipe"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "a.safetensors").write_bytes(b"inside")
    (folder / "b.safetensors").symlink_to(outside)
    with pytest.raises(HashingError, match="outside the allowed folders"):
        hash_folder(folder, allowed_roots=[tmp_path / "root"])
    assert {m.relative_path for m in hash_folder(folder).members} == {"a.safetensors", "b.safetensors"}


def test_a_symlink_swapped_in_for_a_checked_path_is_refused_without_reading_the_target(tmp_path):
    """follow_symlinks=False: the path was a regular file when checked; a link put there later
    (to a file outside the model roots) is refused, and the target is never opened."""
    from workers.hash_cache import hash_file_cached_with_identity
    from workers.hashing import SymlinkRefused, hash_file_and_identity

    secret = tmp_path / "outside-secret.bin"
    secret.write_bytes(b"top secret" * 100)
    inside = tmp_path / "model.safetensors"
    inside.symlink_to(secret)
    with pytest.raises(SymlinkRefused, match="symbolic link"):
        hash_file_and_identity(inside, follow_symlinks=False)
    with pytest.raises(SymlinkRefused):
        hash_file_cached_with_identity(inside, cache=None, follow_symlinks=False)
    assert hash_file_and_identity(inside)[0].size == 1000  # the default still follows (inspect, CLI tools)


def test_nofollow_open_refuses_a_link_swapped_in_after_the_stat(tmp_path, monkeypatch):
    import workers.hash_engine as engine

    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    path = tmp_path / "m.bin"
    path.write_bytes(b"m" * 64)
    real_stat = engine.stat_regular_file

    def stat_then_swap(p, **kw):
        st = real_stat(p, **kw)
        os.unlink(path)
        os.symlink(secret, path)  # the race: swapped between the check and the open
        return st

    monkeypatch.setattr(engine, "stat_regular_file", stat_then_swap)
    with pytest.raises(engine.SymlinkRefused):
        engine.hash_file_and_identity(path, follow_symlinks=False)
