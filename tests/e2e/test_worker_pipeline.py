import hashlib
import json
import zlib
from pathlib import Path

import blake3
import pytest

from tests.model_builders import write_safetensors
from tests.e2e.conftest import manage, worker_running
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
    assert row["status"] == "done" and row["safety_verdict"] == "dangerous" == report["safety"]["verdict"], row
    assert not canary.exists()

    folder = json.loads(manage(e2e_env, "inspect", str(pipe), "--json").stdout)
    [row] = folder["registered"]
    assert row["status"] == "done" and row["folder_digest"] == folder["hashes"]["digest"], row

    # Unchanged files: a second register queues nothing.
    again = manage(e2e_env, "register", str(small), str(big))
    assert "0 queued, 2 unchanged" in again.stdout


def test_worker_identifies_through_the_civitai_stand_in_with_the_redis_rate_limit(e2e_env, tmp_path, e2e_redis_url):
    """Hashing queue -> analysis -> lookups queue -> batched Civitai POST (rate limit in Redis) -> exact match."""
    import redis

    from tests.fakes.civitai import FakeCivitai, file_hashes

    root = Path(e2e_env["MODELXREF_MODEL_ROOTS"])
    known = write_safetensors(root / "known-renamed.safetensors", payload=b"\x11" * 4096)
    data = known.read_bytes()
    with FakeCivitai() as fake:
        model = fake.add_model(name="E2E Model", type="LORA")
        fake.add_version(model, files=[{"name": "original.safetensors", "hashes": file_hashes(
            sha256=hashlib.sha256(data).hexdigest(), blake3=blake3.blake3(data).hexdigest())}])
        # A slow budget keeps the bucket key alive in Redis long enough to see it (its TTL is burst/rate).
        env = {**e2e_env, "CIVITAI_ENABLED": "true", "CIVITAI_API_BASE": fake.base_url, "CIVITAI_REQUESTS_PER_SECOND": "0.01"}
        with worker_running(env, tmp_path):
            done = manage(env, "register", str(known), "--wait", "--timeout", "120")
            assert done.returncode == 0, done.stdout + done.stderr
            # --wait returns once identification is over: the match is there at once.
            [row] = json.loads(manage(env, "inspect", str(known), "--json").stdout)["registered"]
        assert row["matches"] == [{"kind": "renamed", "model": "E2E Model", "file": "original.safetensors",
                                   "evidence": row["matches"][0]["evidence"]}], done.stdout
        assert fake.count("POST", "/api/v1/model-versions/by-hash") == 1
        # The shared rate limiter keeps its bucket in Redis, so every worker host draws from one budget.
        assert redis.Redis.from_url(e2e_redis_url).exists("modelxref:ratelimit:civitai")
