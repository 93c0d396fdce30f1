"""The pure converter (workers/convert.py) against torch and safetensors' own reader.

torch and safetensors are test-only: torch builds the benign checkpoints and, as the oracle, loads
them back (`weights_only=True`, only files these tests wrote); `safetensors.torch.load_file` reads
what the converter wrote. Hostile files are never loaded by anything but our scanner.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.workers.modelfiles import hostile
from tests.workers.modelfiles.builders import sd_checkpoint, write_safetensors
from tests.workers.modelfiles.tensor_zoo import benign_tensors
from workers import convert
from workers.convert import ConvertError, convert_checkpoint, plan_conversion
from workers.modelfiles.fingerprint import fingerprint_path

ROOT = Path(__file__).resolve().parents[2]


# --- the oracle ------------------------------------------------------------------------------

def torch_oracle(path: Path) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True) of a benign file we wrote, flattened as the converter names
    tensors: a Lightning-style state_dict unwrapped, dicts joined with '.', lists by index."""
    allowed = [np._core.multiarray.scalar, np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        loaded = torch.load(path, weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    return dict(_flatten(loaded, ""))


def _flatten(value, prefix):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _flatten(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, child in enumerate(value):
            yield from _flatten(child, f"{prefix}.{i}" if prefix else str(i))


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        have = got[name]
        want = want.detach().contiguous()
        assert have.dtype == want.dtype, name
        assert tuple(have.shape) == tuple(want.shape), name
        assert _bits(have) == _bits(want), name


def _bits(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def round_trip(source: Path, tmp_path: Path, **kwargs):
    out = tmp_path / (source.stem + ".out.safetensors")
    result = convert_checkpoint(source, out, **kwargs)
    return result, load_file(out)


# --- every benign shape the reader's tests build ----------------------------------------------

def _zoo() -> dict:
    return benign_tensors()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_every_dtype_and_view_round_trips_like_torch(tmp_path, zip_format):
    tensors = _zoo()
    if not zip_format:  # the legacy format predates these dtypes
        tensors.pop("f8")
        tensors.pop("u16")
    path = tmp_path / "zoo.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    result, got = round_trip(path, tmp_path)
    assert_same_tensors(got, torch_oracle(path))
    assert result.plan.format == ("torch-zip" if zip_format else "torch-legacy")


def test_sd_checkpoint_round_trips_and_keeps_its_content_id(tmp_path):
    path = tmp_path / "sd.ckpt"
    torch.save(sd_checkpoint(), path)
    result, got = round_trip(path, tmp_path)
    assert_same_tensors(got, torch_oracle(path))
    source_fp = fingerprint_path(path)
    out_fp = fingerprint_path(result.output)
    # The catalog links the two as "converted": same tensors, other container.
    assert out_fp.content_id == source_fp.content_id == result.verification.content_id
    assert out_fp.precision_id == source_fp.precision_id


def test_lightning_style_checkpoint_with_numpy_scalars(tmp_path):
    w = torch.randn(2, 2)
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.w": w, "p": torch.nn.Parameter(torch.ones(3))},
                "global_step": np.int64(470000), "epoch": 5, "pytorch-lightning_version": "1.9.0",
                "hyper_parameters": {"lr": 1e-4, "betas": (0.9, 0.999), "ckpt_path": None, "ema": True},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}],
                "lr_schedulers": [{"last_epoch": 4}]}, path)
    result, got = round_trip(path, tmp_path)
    assert_same_tensors(got, torch_oracle(path))
    assert set(got) == {"model.diffusion_model.w", "p"}  # unwrapped: named without "state_dict."
    from safetensors import safe_open

    with safe_open(result.output, "pt") as f:
        metadata = f.metadata()
    assert metadata == {"format": "pt", "global_step": "470000", "epoch": "5", "pytorch-lightning_version": "1.9.0",
                        "hyper_parameters.lr": "0.0001", "hyper_parameters.betas": "[0.9, 0.999]",
                        "hyper_parameters.ckpt_path": "null", "hyper_parameters.ema": "true",
                        "lr_schedulers.0.last_epoch": "4"}
    dropped = {d.name: d for d in result.plan.selection.dropped}
    assert set(dropped) == {"optimizer_states"}
    assert "1 tensor" in dropped["optimizer_states"].what and "training state" in dropped["optimizer_states"].why
    # Optimizer state is what the fingerprint ignores too: the ids still compare with the source's.
    assert result.plan.selection.dropped_weights == 0
    assert fingerprint_path(result.output).content_id == fingerprint_path(path).content_id


def test_nested_dicts_lists_and_tied_weights(tmp_path):
    w = torch.randn(4, 4)
    path = tmp_path / "nested.pt"
    torch.save({"encoder": {"layers": [{"w": w, "b": torch.zeros(4)}, {"w": w.t()}]}, "lm_head": w, "embed": w}, path)
    _, got = round_trip(path, tmp_path)
    assert_same_tensors(got, torch_oracle(path))
    assert "encoder.layers.1.w" in got and torch.equal(got["lm_head"], got["embed"])


def test_views_of_one_shared_storage_are_materialised_like_contiguous(tmp_path):
    storage = torch.arange(100, dtype=torch.float32)
    path = tmp_path / "views.pt"
    torch.save({"a": storage[10:20], "b": storage[::3], "c": storage.view(10, 10)[:, 2], "whole": storage,
                "d": storage[50:].view(5, 10).t()}, path)
    result, got = round_trip(path, tmp_path)
    assert_same_tensors(got, torch_oracle(path))
    kinds = {t.name: "span" if t.span else "load" for t in result.plan.tensors}
    # Contiguous pieces are streamed from the file; only strided views are materialised.
    assert kinds == {"a": "span", "whole": "span", "b": "load", "c": "load", "d": "load"}


def test_big_endian_checkpoint_is_written_little_endian(tmp_path):
    entries = hostile.benign_zip_entries()
    entries[1] = ("archive/byteorder", b"big")
    entries[2] = ("archive/data/0", struct.pack(">4f", 1, 2, 3, 4))
    path = hostile.torch_zip(tmp_path / "be.pt", entries)
    _, got = round_trip(path, tmp_path)
    assert got["w"].tolist() == [1, 2, 3, 4]


def test_numpy_archives_and_bare_pickles(tmp_path):
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    f = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    np.savez(tmp_path / "plain.npz", a=a, f=f)
    np.savez_compressed(tmp_path / "packed.npz", a=a, f=f)
    for name in ("plain.npz", "packed.npz"):
        _, got = round_trip(tmp_path / name, tmp_path)
        with np.load(tmp_path / name, allow_pickle=False) as oracle:  # numeric arrays only: no pickle involved
            assert sorted(got) == sorted(oracle.files)
            for key in oracle.files:
                np.testing.assert_array_equal(got[key].numpy(), oracle[key])
                assert got[key].numpy().dtype == oracle[key].dtype.newbyteorder("=")
    import pickle

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "nested": {"b": np.ones(2, dtype=np.float64)}}
    (tmp_path / "state.pkl").write_bytes(pickle.dumps(arrays, protocol=2))
    _, got = round_trip(tmp_path / "state.pkl", tmp_path)
    np.testing.assert_array_equal(got["w"].numpy(), arrays["w"])
    np.testing.assert_array_equal(got["nested.b"].numpy(), arrays["nested"]["b"])


# --- casts ------------------------------------------------------------------------------------

def _cast_source() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    edges = torch.tensor([0.0, -0.0, 1.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 3.4e38, float("inf"), -float("inf"),
                          6e-8, 3e-8, 1e-45, 2.0 ** -24, 2.0 ** -25, 1.0009765625, 1.00048828125, 1.000732421875])
    return {"f32": torch.cat([torch.randn(5000, generator=gen) * s for s in (1e-6, 1e-2, 1.0, 1e3)] + [edges]),
            "f64": torch.randn(3000, generator=gen, dtype=torch.float64) * 100,
            "bf16": (torch.randn(3000, generator=gen) * 50).bfloat16(),
            "f16": torch.randn(3000, generator=gen).half(), "i64": torch.arange(5),
            "f8": torch.randn(8, generator=gen).to(torch.float8_e4m3fn), "bool": torch.tensor([True])}


@pytest.mark.parametrize("mode, target", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_casts_are_bit_exact_with_torch(tmp_path, mode, target):
    source = _cast_source()
    path = tmp_path / "cast.pt"
    torch.save(source, path)
    result, got = round_trip(path, tmp_path, dtype=mode)
    cast_from = {torch.float16: {"f32", "f64", "bf16"}, torch.bfloat16: {"f32", "f64", "f16"}}[target]
    expected = {k: v.to(target) if k in cast_from else v for k, v in source.items()}
    assert_same_tensors(got, expected)
    if mode == "fp16":
        # The catalog links an fp16 export to its source by precision_id.
        assert fingerprint_path(result.output).precision_id == fingerprint_path(path).precision_id
        assert result.verification.precision_id == fingerprint_path(path).precision_id


def test_a_cast_keeps_nan_a_nan(tmp_path):
    path = tmp_path / "nan.pt"
    torch.save({"w": torch.tensor([float("nan"), 1.0, -float("nan")])}, path)
    for mode in ("fp16", "bf16"):
        out = tmp_path / f"nan.{mode}.safetensors"
        convert_checkpoint(path, out, dtype=mode)
        got = load_file(out)["w"].float()
        assert torch.isnan(got[0]) and torch.isnan(got[2]) and got[1] == 1.0


# --- the file it writes ---------------------------------------------------------------------

def test_output_is_byte_for_byte_what_safetensors_itself_writes(tmp_path):
    # The same tensors give the same bytes (so the same SHA256) as safetensors.torch.save_file:
    # a conversion can be recognised as a .safetensors file published elsewhere.
    from safetensors.torch import save

    state = {**{k: v for k, v in _zoo().items() if k not in ("transposed", "sliced", "expanded")},
             **sd_checkpoint(), "c64": torch.randn(3, dtype=torch.complex64)}
    path = tmp_path / "m.pt"
    torch.save(state, path)
    result = convert_checkpoint(path, tmp_path / "m.safetensors")
    assert Path(result.output).read_bytes() == save({k: v.contiguous() for k, v in state.items()})


def test_header_is_ordered_aligned_and_padded(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"z": torch.ones(3, dtype=torch.float16), "a": torch.ones(5, dtype=torch.int8),
                "m": torch.ones(2, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float16), "epoch": 3}, path)
    result = convert_checkpoint(path, tmp_path / "m.safetensors")
    raw = Path(result.output).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert size % 8 == 0 and raw[8 + size - 1:8 + size] in (b" ", b"}")
    header = json.loads(raw[8:8 + size])
    # __metadata__ first, then the data order: widest dtype first, names sorted within a dtype.
    assert list(header) == ["__metadata__", "m", "b", "z", "a"]
    for name, info in header.items():
        if name != "__metadata__":
            assert list(info) == ["dtype", "shape", "data_offsets"]
            itemsize = {"F64": 8, "F16": 2, "I8": 1}[info["dtype"]]
            assert info["data_offsets"][0] % itemsize == 0  # every tensor aligned to its element size
    assert header["__metadata__"] == {"epoch": "3", "format": "pt"}


def test_output_is_refused_when_it_exists_and_nothing_is_replaced(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, path)
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"mine")
    with pytest.raises(ConvertError, match="already exists"):
        convert_checkpoint(path, out)
    assert out.read_bytes() == b"mine"


def test_plan_says_what_will_be_written_without_reading_tensors(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 1, "odd": {1, 2}}, path)
    plan = plan_conversion(path, dtype="fp16")
    assert plan.output_size == len(plan.layout.header) + 2000
    assert plan.dtypes_written() == {"F16": 1}
    assert plan.metadata == {"epoch": "1", "format": "pt"}
    assert [d.name for d in plan.selection.dropped] == ["odd"]
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob(".*partial"))


def test_names_that_would_collide_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}}, path)
    with pytest.raises(ConvertError, match="both be named 'a.b'"):
        convert_checkpoint(path, tmp_path / "c.safetensors")


def test_files_that_are_not_checkpoints_are_refused_in_words(tmp_path):
    st = write_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    with pytest.raises(ConvertError, match="already a safetensors file"):
        convert_checkpoint(st, tmp_path / "again.safetensors")
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(ConvertError, match="no tensor"):
        convert_checkpoint(empty, tmp_path / "empty.safetensors")
    with pytest.raises(ConvertError, match="folder"):
        convert_checkpoint(tmp_path, tmp_path / "x.safetensors")


# --- hostile files: refused with their verdict, nothing runs, nothing is written ---------------

@pytest.mark.parametrize("name", sorted(hostile.HOSTILE))
def test_every_hostile_file_is_refused_and_nothing_runs(tmp_path, name):
    build, verdict = hostile.HOSTILE[name]
    canary = tmp_path / "CANARY"
    work = tmp_path / "in"
    work.mkdir()
    path = build(work / f"{name}.ckpt", canary)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConvertError) as refused:
        convert_checkpoint(path, out_dir / "converted.safetensors", allow_suspicious=True)
    assert refused.value.verdict == verdict
    assert verdict in str(refused.value) and refused.value.findings
    assert not canary.exists()
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


def test_suspicious_file_needs_allow_suspicious_and_lists_what_it_ignored(tmp_path):
    path, expected = hostile.lightning_like_checkpoint(tmp_path / "l.ckpt", tmp_path)
    out = tmp_path / "l.safetensors"
    with pytest.raises(ConvertError, match="suspicious") as refused:
        convert_checkpoint(path, out)
    assert refused.value.verdict == "suspicious" and not out.exists()
    result = convert_checkpoint(path, out, allow_suspicious=True)
    got = load_file(out)
    assert_same_tensors(got, {"model.w": expected["state_dict.model.w"]})
    assert any("fake_lightning.ModelCheckpoint" in f.what for f in result.plan.ignored)
    dropped = {d.name: d.what for d in result.plan.selection.dropped}
    assert "fake_lightning.ModelCheckpoint object" in dropped["checkpoint_callback"]
    assert result.plan.metadata["global_step"] == "1234"
    assert result.plan.selection.dropped_weights == 1  # the callback's tensor: the ids cannot be compared


# --- failures leave nothing behind ----------------------------------------------------------

def test_a_source_changed_mid_conversion_leaves_no_output(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({f"w{i}": torch.randn(64) for i in range(4)}, path)
    out = tmp_path / "m.safetensors"
    touched = []

    def progress(done, total, stage):
        if not touched:
            touched.append(True)
            with open(path, "r+b") as f:  # same size, same bytes: only the ctime tells
                f.seek(0)
                f.write(f.read(1))

    with pytest.raises(ConvertError, match="changed while it was being converted"):
        convert_checkpoint(path, out, progress=progress)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_a_verification_mismatch_leaves_no_output(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    torch.save({"a": torch.ones(16), "b": torch.zeros(16)}, path)
    out = tmp_path / "m.safetensors"
    real_write_all, calls = convert._write_all, []

    def flip_a_byte(fd, data):
        calls.append(1)
        if len(calls) == 2:  # the first tensor's data, after it was hashed
            data = bytearray(data)
            data[0] ^= 0xFF
            data = memoryview(bytes(data))
        real_write_all(fd, data)

    monkeypatch.setattr(convert, "_write_all", flip_a_byte)
    with pytest.raises(ConvertError, match="verification failed: 1 tensor"):
        convert_checkpoint(path, out)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_the_catalogs_id_of_the_source_is_checked_when_given(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(4)}, path)
    with pytest.raises(ConvertError, match="differs from the one the catalog holds"):
        convert_checkpoint(path, tmp_path / "m.safetensors", expect_content_id="0" * 32)
    assert not (tmp_path / "m.safetensors").exists()
    good = fingerprint_path(path).content_id
    result = convert_checkpoint(path, tmp_path / "m.safetensors", expect_content_id=good)
    assert any("catalog holds" in line for line in result.verification.checked)


@pytest.mark.parametrize("dtype", ["keep", "fp16"])
def test_the_catalogs_ids_hold_for_tensors_the_fingerprint_splits_or_drops(tmp_path, dtype):
    """The fingerprint digests canonical forms (an OpenCLIP in_proj split in thirds, a LoRA's neutral
    alpha dropped, another alpha as an F32 scalar): the check of the written file must compute them too."""
    g = torch.Generator().manual_seed(5)
    path = tmp_path / "m.pt"
    torch.save({"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": torch.randn(12, 4, generator=g),
                "lora_unet_a_to_k.lora_down.weight": torch.randn(2, 8, generator=g),
                "lora_unet_a_to_k.lora_up.weight": torch.randn(8, 2, generator=g),
                "lora_unet_a_to_k.alpha": torch.tensor(2.0),
                "lora_unet_b_to_v.lora_down.weight": torch.randn(2, 8, generator=g),
                "lora_unet_b_to_v.lora_up.weight": torch.randn(8, 2, generator=g),
                "lora_unet_b_to_v.alpha": torch.tensor(1.0, dtype=torch.float64)}, path)
    source = fingerprint_path(path)
    out = tmp_path / "m.safetensors"
    result = convert_checkpoint(path, out, dtype=dtype, expect_content_id=source.content_id if dtype == "keep" else "",
                                expect_precision_id=source.precision_id if dtype == "fp16" else "")
    assert any("catalog holds" in line for line in result.verification.checked)
    assert result.verification.content_id == fingerprint_path(out).content_id


def test_a_job_temp_name_left_by_a_killed_run_is_replaced(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(4)}, path)
    temp = tmp_path / ".m.safetensors.job7.partial"
    temp.write_bytes(b"half a file")
    convert_checkpoint(path, tmp_path / "m.safetensors", temp_path=temp)
    assert not temp.exists() and load_file(tmp_path / "m.safetensors")["w"].tolist() == [1, 1, 1, 1]


def test_progress_counts_bytes_read_and_verified(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1000), "b": torch.ones(10, dtype=torch.float64)}, path)
    seen = []
    result = convert_checkpoint(path, tmp_path / "m.safetensors", progress=lambda d, t, s: seen.append((d, t, s)))
    total = result.plan.source_tensor_bytes + result.plan.output_size
    assert seen[-1][0] <= total and all(t == total for _, t, _ in seen)
    assert {s for _, _, s in seen} == {"converting", "verifying"}
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


# --- the command line -----------------------------------------------------------------------

def test_command_line_converts_and_refuses(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 2}, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "workers.convert", str(path), str(tmp_path / "m.safetensors"),
                           "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["tensors"] == 1 and body["metadata"]["epoch"] == "2" and body["verification"]["content_id"]
    canary = tmp_path / "CANARY"
    bad = hostile.zip_hidden_pickle(tmp_path / "bad.ckpt", canary)
    refused = subprocess.run([sys.executable, "-m", "workers.convert", str(bad), str(tmp_path / "bad.safetensors")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert refused.returncode == 1 and "dangerous" in refused.stderr and "os.system" in refused.stderr
    assert not canary.exists() and not (tmp_path / "bad.safetensors").exists()


def test_a_full_disk_is_an_error_in_words_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(4)}, path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(convert, "_write_all", full)
    with pytest.raises(ConvertError, match="No space left on device"):
        convert_checkpoint(path, tmp_path / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
