"""The `make demo` library is what it claims to be (the generator only; no servers)."""
import hashlib

import pytest

from tests.fakes.demo_library import build_demo_library
from workers.hashing import hash_file
from workers.modelfiles.fingerprint import fingerprint_path
from workers.modelfiles.pickle_scan import scan_path
from workers.modelfiles.sniff import sniff


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_demo_library(tmp_path_factory.mktemp("demo") / "models")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_hostile_pt_is_dangerous_because_of_its_os_system_call(lib):
    report = scan_path(lib.files["evil"])
    assert report.verdict == "dangerous"
    assert any(f.severity == "dangerous" and "system" in f.what for f in report.findings)
    # The same hand-written container without the payload is clean: the verdict comes from the call.
    assert sniff(lib.files["toad_ckpt"]) == sniff(lib.files["evil"]) == "torch-zip"
    assert scan_path(lib.files["toad_ckpt"]).verdict == "safe"


def test_renamed_copy_has_the_same_bytes_under_another_name(lib):
    original, copy = lib.files["toad_fp32"], lib.files["toad_renamed"]
    assert original.name != copy.name
    assert sha256(original) == sha256(copy)


@pytest.mark.parametrize("full, half", [("toad_fp32", "toad_fp16"), ("frog_fp32", "frog_fp16_mine")])
def test_fp16_cast_shares_precision_id_not_content_id(lib, full, half):
    a, b = fingerprint_path(lib.files[full]), fingerprint_path(lib.files[half])
    assert a.precision_id == b.precision_id
    assert a.content_id != b.content_id
    assert set(a.components) == {"unet", "vae", "text_encoder"} and b.dtypes.get("F32", 0) == 0


@pytest.mark.parametrize("converted", ["toad_ckpt", "toad_diffusers"])
def test_conversions_hold_the_checkpoints_tensors(lib, converted):
    original = fingerprint_path(lib.files["toad_fp32"])
    other = fingerprint_path(lib.files[converted])
    assert sniff(lib.files[converted]) != sniff(lib.files["toad_fp32"]) == "safetensors"
    assert other.content_id == original.content_id
    assert {k: v.content_id for k, v in other.components.items()} == {
        k: v.content_id for k, v in original.components.items()}


def test_seeded_hashes_agree_with_the_hash_engine(lib):
    published = {f["name"]: f["hashes"] for m in lib.civitai_seed["models"] for v in m["versions"] for f in v["files"]}
    for key, name in (("toad_fp32", "toadDiffusion_v10_fp32.safetensors"),
                      ("toad_fp16", "toadDiffusion_v10_fp16.safetensors"),
                      ("sparkle_lora", "sparkleStyle_v1.safetensors")):
        ours = hash_file(lib.files[key]).civitai_form()
        assert {k: ours[k] for k in published[name]} == published[name]
    # The retagged LoRA is known only through its tensor bytes.
    glow = hash_file(lib.files["glow_lora"]).civitai_form()
    assert glow["SHA256"] != published["glowLora_v1.safetensors"]["SHA256"]
    assert glow["AutoV3"] == published["glowLora_v1.safetensors"]["AutoV3"]
    assert hashlib.sha256(lib.hf_files["diffusion_pytorch_model.safetensors"]).hexdigest() == sha256(lib.files["vae"])


def test_rebuilding_rewrites_nothing(lib):
    before = {p: p.stat().st_mtime_ns for p in lib.root.rglob("*") if p.is_file()}
    again = build_demo_library(lib.root)
    assert {p: p.stat().st_mtime_ns for p in lib.root.rglob("*") if p.is_file()} == before
    assert again.civitai_seed == lib.civitai_seed


def test_the_demo_refuses_one_port_for_two_servers(monkeypatch, tmp_path):
    from tests.fakes import demo

    monkeypatch.setenv("MODELXREF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "8765")
    monkeypatch.delenv("DEMO_CIVITAI_PORT", raising=False)
    with pytest.raises(demo.DemoError, match="must differ"):
        demo.run()
