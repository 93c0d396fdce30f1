"""A whole library identified through a real worker: few Civitai requests, and `register --wait`
returns only once every file is identified, saying what each one is."""
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import manage, worker_running
from tests.fakes.civitai import FakeCivitai
from tests.fakes.demo_library import build_demo_library
from tests.workers.modelfiles.hostile import HOSTILE

pytestmark = pytest.mark.e2e

# Hostile pickles of every container kind beside the demo library: 12 units + 21 = 33 files.
HOSTILE_SAMPLES = [name for name, (_build, verdict) in HOSTILE.items() if verdict == "dangerous"][:21]
REQUEST_BUDGET = 8  # issue 8: a library like this one, with one 429 and one HTML challenge


def _library(root: Path, canary: Path):
    lib = build_demo_library(root / "demo")
    (root / "downloads").mkdir()
    for name in HOSTILE_SAMPLES:
        HOSTILE[name][0](root / "downloads" / f"{name}.ckpt", canary)
    return lib


def test_register_wait_identifies_a_library_in_a_few_requests_and_says_what_each_file_is(e2e_env, tmp_path):
    root = Path(e2e_env["MODELXREF_MODEL_ROOTS"])
    canary = tmp_path / "canary"
    lib = _library(root, canary)
    with FakeCivitai() as fake:
        fake.load_seed(lib.civitai_seed)
        # The first request (the batch POST) is rate-limited; the first GET after it meets a challenge page.
        fake.fail_next(1, status=429)
        fake.fail_next(1, status=None)
        fake.fail_next(1, status=200, html=True)
        env = {**e2e_env, "CIVITAI_ENABLED": "true", "CIVITAI_API_BASE": fake.base_url,
               "CIVITAI_REQUESTS_PER_SECOND": "20"}
        with worker_running(env, tmp_path) as workers:
            done = manage(env, "register", str(root), "--wait", "--timeout", "240")
            assert done.returncode == 0, done.stdout + done.stderr
            requests_at_return = list(fake.requests)
            state = _state(env, root)
            log = "\n".join(w.log_text() for w in workers)

    assert "33 queued" in done.stdout
    # Returned only after identification: nothing pending, every expected match already there.
    assert state["lookups_busy"] == 0, state
    kinds = {Path(f["path"]).name: f["kinds"] for f in state["files"]}
    assert kinds["toad_final_REAL.safetensors"] == ["renamed"]
    assert kinds["frog-realism-fp16-mine.safetensors"] == ["precision"]
    assert kinds["glow-lora-retagged.safetensors"] == ["same-weights"]
    assert "converted" in kinds["toad-diffusion-v1.ckpt"] and "converted" in kinds["toad-diffusion-v1"]
    assert kinds["my-own-lora.safetensors"] == []

    methods = [(m, p) for m, p, _ in requests_at_return]
    assert len(methods) <= REQUEST_BUDGET, (methods, log[-3000:])
    assert not any("by-hash/" in p and len(p.rsplit("/", 1)[-1]) == 64 for _m, p in methods), \
        "no single-hash GET by SHA256 or BLAKE3 after the batch"
    assert not canary.exists()

    # The summary says what each file is, how we know, and the totals.
    out = done.stdout
    line = next(x for x in out.splitlines() if x.rstrip().endswith("toad_final_REAL.safetensors"))
    assert "Toad Diffusion v1.0" in line and "renamed copy" in line and "Checkpoint, SD 1.5" in line
    line = next(x for x in out.splitlines() if x.rstrip().endswith("frog-realism-fp16-mine.safetensors"))
    assert "Frog Realism v2.0" in line and "precision variant" in line
    line = next(x for x in out.splitlines() if x.rstrip().endswith("my-own-lora.safetensors"))
    assert line.startswith("unknown")
    line = next(x for x in out.splitlines() if x.rstrip().endswith("free-upscaler-4x.pt"))
    assert "dangerous" in line
    totals = out.strip().splitlines()[-1]
    assert totals.startswith("33 files: ") and f"{len(HOSTILE_SAMPLES) + 1} dangerous" in totals, totals
    assert "duplicate group" in totals
    # Not a terminal: plain progress lines, no progress-bar redraws.
    assert "\r" not in done.stderr and "identified" in done.stderr


def _state(env: dict, root: Path) -> dict:
    snippet = f"""
import json
from models_catalog.models import CivitaiLookup, LocalFile, Match
rows = [{{"path": lf.path, "kinds": sorted(Match.objects.filter(local_file=lf).values_list("kind", flat=True))}}
        for lf in LocalFile.objects.filter(path__startswith={str(root)!r})]
print(json.dumps({{"files": rows,
                   "lookups_busy": CivitaiLookup.objects.filter(state__in=["pending", "running"]).count()}}))
"""
    done = manage(env, "shell", "-c", snippet)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
