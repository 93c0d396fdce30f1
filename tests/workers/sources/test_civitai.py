import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import blake3
import pytest

from tests.fakes.civitai import FakeCivitai, fake_civitai, file_hashes  # noqa: F401
from workers.sources.civitai import CivitaiClient
from workers.sources.civitai_data import CivitaiError, CivitaiInputError, CivitaiUnavailable, parse_version
from workers.sources.http import RateLimiterError, RetryPolicy

REPO = Path(__file__).resolve().parents[3]


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.records = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def make_client(fake, recorder=None, **kwargs):
    recorder = recorder or Recorder()
    kwargs.setdefault("retry", RetryPolicy(rng=lambda: 0.5))
    kwargs.setdefault("timeout", (2, 5))
    return CivitaiClient(base_url=fake.base_url, sleep=recorder.sleep, on_request=recorder.records.append, **kwargs)


def digests(content: bytes) -> dict[str, str]:
    """Real digests of `content`, computed independently of the code under test."""
    return {
        "sha256": hashlib.sha256(content).hexdigest(),
        "crc32": f"{zlib.crc32(content):08X}",
        "blake3": blake3.blake3(content).hexdigest(),
        # AutoV3 hashes the tensor data after the safetensors header; any 12 hex stand in here.
        "autov3": hashlib.sha256(b"tensors:" + content).hexdigest()[:12],
        "autov1": hashlib.sha256(content[:64]).hexdigest()[:8],
    }


def seed_file(fake, content: bytes, *, model_name="Model", published_at=None, **file_extra):
    d = digests(content)
    mid = fake.add_model(name=model_name)
    vid = fake.add_version(
        mid,
        published_at=published_at,
        files=[{"name": f"{model_name}.safetensors", "hashes": file_hashes(**d), **file_extra}],
    )
    return mid, vid, d


# -- batch by SHA256 --------------------------------------------------------------


def test_batch_of_250_hashes_takes_three_posts_and_maps_back_to_inputs(fake_civitai):
    expected = {}
    for i in range(40):
        _, vid, d = seed_file(fake_civitai, f"model-{i}".encode(), model_name=f"m{i}")
        expected[d["sha256"]] = vid
    misses = [hashlib.sha256(f"miss-{i}".encode()).hexdigest() for i in range(210)]
    queried = list(expected) + misses
    # Mixed case on input: half of the hits are asked upper-case.
    queried = [h.upper() if i % 2 else h for i, h in enumerate(queried)]
    client = make_client(fake_civitai)

    result = client.versions_by_sha256(queried)

    posts = [body for method, path, body in fake_civitai.requests if method == "POST"]
    assert [len(b) for b in posts] == [100, 100, 50]
    assert all(h == h.upper() for b in posts for h in b)
    assert {k.lower(): v.id for k, v in result.items()} == expected
    assert set(result) <= set(queried)  # keyed by the caller's own strings
    for key, version in result.items():
        assert key.upper() in {f.hashes["SHA256"] for f in version.files}


def test_batch_prefers_the_oldest_published_version_and_skips_null_entries(fake_civitai):
    content = b"same file uploaded twice"
    d = digests(content)
    mid = fake_civitai.add_model(name="Dup")
    newer = fake_civitai.add_version(mid, name="newer", published_at="2024-06-01T00:00:00.000Z",
                                     files=[{"name": "a.safetensors", "hashes": file_hashes(sha256=d["sha256"])}])
    older = fake_civitai.add_version(mid, name="older", published_at="2023-02-01T00:00:00.000Z",
                                     files=[{"name": "a.ckpt", "hashes": file_hashes(sha256=d["sha256"])}])
    assert older > newer  # later id, earlier date: the date must decide
    fake_civitai.batch_nulls = True

    result = make_client(fake_civitai).versions_by_sha256([d["sha256"]])

    assert result[d["sha256"]].id == older


def test_batch_rejects_a_bad_hash_before_any_request(fake_civitai):
    client = make_client(fake_civitai)
    with pytest.raises(CivitaiInputError):
        client.versions_by_sha256(["ab" * 32, "not-a-hash"])
    with pytest.raises(CivitaiInputError):
        client.versions_by_sha256("ab" * 32)  # a lone string is not a list of hashes
    assert fake_civitai.requests == []


def test_empty_batch_makes_no_request(fake_civitai):
    assert make_client(fake_civitai).versions_by_sha256([]) == {}
    assert fake_civitai.requests == []


def test_version_refs_by_sha256_uses_the_ids_endpoint(fake_civitai):
    mid, vid, d = seed_file(fake_civitai, b"refs")
    refs = make_client(fake_civitai).version_refs_by_sha256([d["sha256"], "00" * 32])
    assert [(r.version_id, r.model_id) for r in refs[d["sha256"]]] == [(vid, mid)]
    assert len(refs) == 1
    assert fake_civitai.count("POST", "/api/v1/model-versions/by-hash/ids") == 1


# -- GET by any hash ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["autov1", "autov2", "autov3", "crc32", "blake3", "sha256_lower", "sha256"])
def test_get_by_hash_finds_the_version_by_any_kind(fake_civitai, kind):
    _, vid, d = seed_file(fake_civitai, b"a lora file", model_name="Lora")
    seed_file(fake_civitai, b"another file", model_name="Other")
    query = {
        "autov1": d["autov1"], "autov2": d["sha256"][:10], "autov3": d["autov3"], "crc32": d["crc32"].lower(),
        "blake3": d["blake3"], "sha256_lower": d["sha256"].lower(), "sha256": d["sha256"].upper(),
    }[kind]

    version = make_client(fake_civitai).version_by_hash(query)

    assert version is not None and version.id == vid
    assert version.model.name == "Lora"
    assert version.files[0].hashes["SHA256"] == d["sha256"].upper()
    assert version.files[0].hashes["CRC32"] == d["crc32"]
    assert version.files[0].hashes["BLAKE3"] == d["blake3"].upper()
    assert fake_civitai.requests[-1][1] == f"/api/v1/model-versions/by-hash/{query.upper()}"


def test_get_by_hash_returns_the_oldest_published_version(fake_civitai):
    d = digests(b"shared")
    mid = fake_civitai.add_model()
    fake_civitai.add_version(mid, published_at="2024-01-01T00:00:00Z",
                             files=[{"hashes": file_hashes(sha256=d["sha256"])}])
    oldest = fake_civitai.add_version(mid, published_at="2022-01-01T00:00:00Z",
                                      files=[{"hashes": file_hashes(sha256=d["sha256"])}])
    assert make_client(fake_civitai).version_by_hash(d["sha256"]).id == oldest


def test_misses_are_none_not_errors(fake_civitai):
    mid, vid, _ = seed_file(fake_civitai, b"present")
    no_primary = fake_civitai.add_version(
        mid, files=[{"hashes": file_hashes(sha256="cd" * 32), "primary": False}]
    )
    rec = Recorder()
    client = make_client(fake_civitai, rec)
    assert client.version_by_hash("ab" * 32) is None
    assert client.version_by_hash("cd" * 32) is None  # "Missing model file"
    assert client.version(999_999) is None
    assert client.model(999_999) is None
    assert client.version(no_primary) is not None
    assert [r.outcome for r in rec.records] == ["not_found"] * 4 + ["ok"]
    assert rec.sleeps == []


def test_bad_hash_input_is_rejected_without_a_request(fake_civitai):
    client = make_client(fake_civitai)
    for bad in ["", "xyz", "ABCDEF1", "../models/1", "A" * 63, 123]:
        with pytest.raises(CivitaiInputError):
            client.version_by_hash(bad)
    with pytest.raises(CivitaiInputError):
        client.version(0)
    assert fake_civitai.requests == []


# -- versions and models --------------------------------------------------------------


def test_version_and_model_parse_the_real_shapes(fake_civitai):
    mid = fake_civitai.add_model(name="Toad", type="LORA", tags=["style", "toad"])
    v1 = fake_civitai.add_version(mid, name="V1", base_model="Flux.1 D", trained_words=["toadstyle"],
                                  files=[{"name": "toad.safetensors", "sizeKB": 167938.88,
                                          "metadata": {"fp": "fp16", "size": "pruned"},
                                          "hashes": file_hashes(sha256="ef" * 32, crc32="0000abcd")},
                                         {"name": "toad.ckpt", "type": "Model", "primary": False,
                                          "metadata": {"format": "PickleTensor"},
                                          "hashes": {"SHA256": "12" * 32}}])
    v2 = fake_civitai.add_version(mid, name="V2", files=[{"hashes": file_hashes(sha256="34" * 32)}])
    client = make_client(fake_civitai)

    version = client.version(v1)
    assert (version.id, version.model_id, version.name, version.base_model) == (v1, mid, "V1", "Flux.1 D")
    assert version.trained_words == ("toadstyle",)
    assert version.air == f"urn:air:flux1:lora:civitai:{mid}@{v1}"
    assert version.published_at is not None and version.published_at.tzinfo is not None
    [primary] = [f for f in version.files if f.primary]
    assert (primary.name, primary.format, primary.fp, primary.size_kind, primary.size_kb) == (
        "toad.safetensors", "SafeTensor", "fp16", "pruned", 167938.88)
    assert version.files[1].format == "PickleTensor" and not version.files[1].primary
    assert "0000ABCD" in primary.hashes.values()
    assert version.raw["id"] == v1

    model = client.model(mid)
    assert (model.id, model.name, model.type, model.tags) == (mid, "Toad", "LORA", ("style", "toad"))
    assert {v.id for v in model.versions} == {v1, v2}
    assert all(v.model_id == mid and v.model.name == "Toad" for v in model.versions)


def test_models_fetches_in_chunks_of_100_in_input_order_including_nsfw(fake_civitai):
    ids = [fake_civitai.add_model(name=f"m{i}", nsfw=(i % 7 == 0)) for i in range(150)]
    wanted = list(reversed(ids)) + [999_999_999]

    models = make_client(fake_civitai).models(wanted)

    assert [m.id for m in models] == list(reversed(ids))
    assert any(m.nsfw for m in models)
    assert fake_civitai.count("GET", "/api/v1/models") == 2


# -- retries and failures -------------------------------------------------------------


def test_429_without_retry_after_backs_off_exponentially_then_succeeds(fake_civitai):
    _, vid, d = seed_file(fake_civitai, b"x")
    fake_civitai.fail_next(2, status=429)
    rec = Recorder()
    client = make_client(fake_civitai, rec, retry=RetryPolicy())  # real jitter

    assert client.version_by_hash(d["sha256"]).id == vid

    assert len(rec.sleeps) == 2
    assert 0.8 <= rec.sleeps[0] <= 1.2
    assert 1.6 <= rec.sleeps[1] <= 2.4
    assert len(fake_civitai.requests) == 3
    assert client.calls == 3
    assert [r.outcome for r in rec.records] == ["retry", "retry", "ok"]
    assert [r.status for r in rec.records] == [429, 429, 200]


def test_429_with_retry_after_waits_what_the_server_says(fake_civitai):
    _, vid, d = seed_file(fake_civitai, b"x")
    fake_civitai.fail_next(1, status=429, headers={"Retry-After": "7"})
    rec = Recorder()
    assert make_client(fake_civitai, rec).version_by_hash(d["sha256"]).id == vid
    assert rec.sleeps == [7.0]


def test_a_retry_after_beyond_max_wait_gives_up_at_once_for_the_task_to_reschedule(fake_civitai):
    fake_civitai.fail_next(1, status=429, headers={"Retry-After": "300"})
    rec = Recorder()
    with pytest.raises(CivitaiUnavailable) as info:
        make_client(fake_civitai, rec).version_by_hash("ab" * 32)
    assert info.value.retry_after == 300.0 and info.value.retryable
    assert rec.sleeps == []
    assert len(fake_civitai.requests) == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503},
        {"status": 503, "html": True},
        {"status": 200, "html": True},
        {"status": 429, "html": True},
        {"status": 502, "body": "Bad Gateway"},
        {"status": 403, "html": True, "headers": {"cf-mitigated": "challenge"}},
        {"status": None, "disconnect": True},
    ],
    ids=["503", "503-html", "200-html-challenge", "429-html", "502-text", "403-cf-challenge", "reset"],
)
def test_transient_failures_are_retried(fake_civitai, fault):
    _, vid, d = seed_file(fake_civitai, b"x")
    fake_civitai.fail_next(1, **fault)
    rec = Recorder()
    assert make_client(fake_civitai, rec).version_by_hash(d["sha256"]).id == vid
    assert rec.sleeps == [1.0]
    assert len(fake_civitai.requests) == 2


def test_persistent_429_ends_in_civitai_unavailable_after_max_attempts(fake_civitai):
    fake_civitai.fail_next(10, status=429)
    rec = Recorder()
    with pytest.raises(CivitaiUnavailable) as info:
        make_client(fake_civitai, rec).versions_by_sha256(["ab" * 32])
    err = info.value
    assert isinstance(err, CivitaiError)
    assert (err.status, err.retryable) == (429, True)
    assert err.retry_after == 30.0  # the next back-off step, capped
    assert err.url.endswith("/model-versions/by-hash")
    assert len(fake_civitai.requests) == 6
    assert rec.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert rec.records[-1].outcome == "unavailable"


def test_a_slow_answer_times_out_and_is_retried(fake_civitai):
    _, vid, d = seed_file(fake_civitai, b"x")
    fake_civitai.fail_next(1, status=None, delay=1.0)
    rec = Recorder()
    client = make_client(fake_civitai, rec, timeout=(1, 0.2))
    assert client.version_by_hash(d["sha256"]).id == vid
    assert len(rec.sleeps) == 1
    assert rec.records[0].status is None and "timed out" in rec.records[0].error


def test_a_server_that_stays_slow_ends_in_civitai_unavailable(fake_civitai):
    fake_civitai.slow(1.0)
    rec = Recorder()
    client = make_client(fake_civitai, rec, timeout=(1, 0.1), retry=RetryPolicy(max_attempts=3, rng=lambda: 0.5))
    with pytest.raises(CivitaiUnavailable) as info:
        client.version_by_hash("ab" * 32)
    assert info.value.status is None and info.value.retry_after == 8.0  # the next step after 1, 2, 4
    assert rec.sleeps == [1.0, 2.0]
    assert len(fake_civitai.requests) == 3
    fake_civitai.slow(0)


def test_connection_refused_is_retryable_unavailability():
    with FakeCivitai() as fake:
        base_url = fake.base_url
    rec = Recorder()
    client = CivitaiClient(base_url=base_url, sleep=rec.sleep, retry=RetryPolicy(max_attempts=2, rng=lambda: 0.5))
    with pytest.raises(CivitaiUnavailable) as info:
        client.version(1)
    assert info.value.status is None and rec.sleeps == [1.0]


def test_400_is_final_and_not_retried(fake_civitai):
    fake_civitai.fail_next(1, status=400, body={"error": "Invalid hash"})
    rec = Recorder()
    with pytest.raises(CivitaiError) as info:
        make_client(fake_civitai, rec).version_by_hash("ab" * 32)
    err = info.value
    assert not isinstance(err, CivitaiUnavailable)
    assert (err.status, err.retryable) == (400, False)
    assert "Invalid hash" in str(err)
    assert len(fake_civitai.requests) == 1 and rec.sleeps == []


def test_the_fake_itself_answers_400_to_an_oversized_batch(fake_civitai):
    import requests

    r = requests.post(fake_civitai.base_url + "/model-versions/by-hash", json=["ab" * 32] * 101, timeout=5)
    assert r.status_code == 400 and "error" in r.json()


def test_html_404_means_the_base_url_is_wrong(fake_civitai):
    rec = Recorder()
    client = CivitaiClient(base_url=fake_civitai.origin + "/api/v2", sleep=rec.sleep)
    with pytest.raises(CivitaiError) as info:
        client.version_by_hash("ab" * 32)
    assert "base URL looks wrong" in str(info.value)
    assert (info.value.status, info.value.retryable) == (404, False)
    assert len(fake_civitai.requests) == 1 and rec.sleeps == []


def test_a_malformed_success_body_is_retryable_unavailability(fake_civitai):
    """One odd 200 must not end identification for good: it is asked again later, like a 5xx."""
    from workers.sources.civitai_data import CivitaiMalformed

    fake_civitai.fail_next(1, status=200, body={"id": "not-an-int", "files": []})
    with pytest.raises(CivitaiMalformed) as info:
        make_client(fake_civitai).version(5)
    assert info.value.retryable and isinstance(info.value, CivitaiUnavailable)
    assert len(fake_civitai.requests) == 1


# -- headers, rate limiting, hooks ---------------------------------------------------------


def test_api_key_is_sent_as_bearer_token_only_when_set(fake_civitai):
    make_client(fake_civitai, api_key="s3cret").version_by_hash("ab" * 32)
    make_client(fake_civitai).version_by_hash("ab" * 32)
    with_key, without_key = fake_civitai.request_headers
    assert with_key["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in without_key
    assert "s3cret" not in repr(make_client(fake_civitai, api_key="s3cret"))


def test_every_attempt_goes_through_the_rate_limiter(fake_civitai):
    class Counting:
        calls = 0

        def acquire(self):
            Counting.calls += 1

    fake_civitai.fail_next(2, status=503)
    make_client(fake_civitai, rate_limiter=Counting()).version(1)
    assert Counting.calls == 3 == len(fake_civitai.requests)


def test_a_broken_rate_limiter_surfaces_as_unavailable(fake_civitai):
    class Broken:
        def acquire(self):
            raise RateLimiterError("redis down")

    with pytest.raises(CivitaiUnavailable):
        make_client(fake_civitai, rate_limiter=Broken()).version(1)
    assert fake_civitai.requests == []


def test_a_failing_hook_does_not_break_the_lookup(fake_civitai):
    _, vid, d = seed_file(fake_civitai, b"x")

    def hook(record):
        raise RuntimeError("metrics backend down")

    client = CivitaiClient(base_url=fake_civitai.base_url, on_request=hook)
    assert client.version_by_hash(d["sha256"]).id == vid


def test_by_hash_answers_carry_the_real_cache_control(fake_civitai):
    import requests

    r = requests.get(fake_civitai.base_url + "/model-versions/by-hash/" + "ab" * 32, timeout=5)
    assert r.status_code == 404 and r.json() == {"error": "Model not found"}
    assert r.headers["Cache-Control"] == "public, s-maxage=3600, stale-while-revalidate=1800"


# -- parsing tolerance ----------------------------------------------------------------------


def test_parse_version_tolerates_missing_and_null_fields():
    v = parse_version({"id": 7, "modelId": 3, "files": [None, {"hashes": {"sha256": "ab" * 32, "CRC32": None,
                                                                             "AutoV2": 12}}]})
    assert (v.id, v.model_id, v.name, v.base_model, v.published_at, v.trained_words) == (7, 3, None, None, None, ())
    assert v.model.id == 3 and v.model.nsfw is False
    (f,) = v.files
    assert f.hashes == {"SHA256": "AB" * 32}  # kind spelling folded, junk values dropped
    assert (f.name, f.size_kb, f.primary, f.format) == ("", None, False, None)


@pytest.mark.parametrize("data", [
    {"modelId": 3},
    {"id": "7", "modelId": 3},
    {"id": True, "modelId": 3},
    {"id": 7},
    {"id": 7, "modelId": 3, "files": {"0": {}}},
    {"id": 7, "modelId": 3, "files": ["x"]},
    [],
])
def test_parse_version_is_strict_about_what_would_corrupt_the_catalog(data):
    with pytest.raises(CivitaiError):
        parse_version(data)


# -- the fake run standalone --------------------------------------------------------------


def test_fake_runs_standalone_with_a_seed_file(tmp_path):
    sha = hashlib.sha256(b"demo").hexdigest()
    seed = {"models": [{"name": "Demo", "type": "Checkpoint", "modelVersions": [
        {"name": "v1", "baseModel": "SDXL 1.0", "files": [{"name": "demo.safetensors",
                                                          "hashes": file_hashes(sha256=sha)}]}]}]}
    seed_path = tmp_path / "seed.json"
    seed_path.write_text(json.dumps(seed))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.civitai", "--port", "0", "--seed", str(seed_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        base_url = line.split()[2]
        assert base_url.endswith("/api/v1")
        version = CivitaiClient(base_url=base_url).version_by_hash(sha[:10])
        assert (version.name, version.base_model, version.model.name) == ("v1", "SDXL 1.0", "Demo")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
