import hashlib
import json
import zlib
from pathlib import Path

import blake3
import pytest

from tests.catalog.conftest import write_safetensors
from tests.e2e.conftest import manage
from tests.workers.modelfiles.hostile import HOSTILE

pytestmark = pytest.mark.e2e


def _expected(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return {
        "SHA256": hashlib.sha256(data).hexdigest().upper(),
        "AutoV2": hashlib.sha256(data).hexdigest()[:10].upper(),
        "AutoV3": hashlib.sha256(data[8 + n:]).hexdigest()[:12].upper(),
        "CRC32": zlib.crc32(data).to_bytes(4, "little").hex().upper(),
        "BLAKE3": blake3.blake3(data).hexdigest().upper(),
        "AutoV1": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper() if len(data) >= 2 * 2**20 else None,
    }


def test_register_wait_hashes_files_and_folder_through_a_real_worker(e2e_env, celery_worker_process):
    root = Path(e2e_env["MODELXREF_MODEL_ROOTS"])
    small = write_safetensors(root / "lora.safetensors", payload=bytes(range(256)) * 4)
    (root / "sub").mkdir()
    big = write_safetensors(root / "sub" / "ckpt.safetensors", payload=bytes(range(251)) * 12_000)  # > 2 MiB: AutoV1
    pipe = root / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    write_safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors", payload=b"\x05" * 4096)
    (root / "notes.txt").write_text("not a model")
    canary = Path(e2e_env["MODELXREF_DATA_DIR"]).parent / "canary"
    hostile = HOSTILE["gadget_os_system"][0](root / "innocent.ckpt", canary)
    outside = Path(e2e_env["MODELXREF_DATA_DIR"]).parent / "outside.safetensors"
    write_safetensors(outside)

    done = manage(e2e_env, "register", str(root), str(outside), "--wait", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outside the model roots" in done.stderr
    assert "4 queued" in done.stdout

    for path in (small, big):
        report = json.loads(manage(e2e_env, "inspect", str(path), "--json").stdout)
        [row] = report["registered"]
        assert row["status"] == "done", row
        assert row["hashes"] == _expected(path.read_bytes())

    report = json.loads(manage(e2e_env, "inspect", str(hostile), "--json").stdout)
    [row] = report["registered"]
    assert row["status"] == "done" and row["safety_verdict"] == "dangerous" == report["safety"]["verdict"]
    assert not canary.exists()

    folder = json.loads(manage(e2e_env, "inspect", str(pipe), "--json").stdout)
    [row] = folder["registered"]
    assert row["status"] == "done" and row["folder_digest"] == folder["hashes"]["digest"]

    # Unchanged files: a second register queues nothing.
    again = manage(e2e_env, "register", str(small), str(big))
    assert "0 queued, 2 unchanged" in again.stdout
