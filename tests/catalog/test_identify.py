"""Identification against the Civitai stand-in over real HTTP, and matching from the catalog."""
import hashlib

import pytest

from models_catalog.models import CivitaiLookup, FileHashes, LocalFile, Match, SourceFile
from models_catalog.services.civitai_lookup import civitai_lookup_run, civitai_refresh_stale
from models_catalog.services.identify import civitai_batch_and_rematch, local_file_identify
from models_catalog.services.matching import local_file_match
from tests.model_builders import write_safetensors
from tests.fakes.civitai import fake_civitai, file_hashes  # noqa: F401
from tests.factories import civitai_file, client_for, fingerprinted_file as _fingerprinted, hashed, seed  # noqa: F401
from workers.sources.civitai_data import CivitaiUnavailable

pytestmark = pytest.mark.django_db


def test_exact_and_renamed_matches_from_one_batch(civitai, model_root, user):
    a = write_safetensors(model_root / "cool.safetensors", payload=b"A" * 100)
    b = write_safetensors(model_root / "renamed-copy.safetensors", payload=b"B" * 100)
    seed(civitai, [civitai_file(a.read_bytes(), "cool.safetensors")], name="Cool")
    seed(civitai, [civitai_file(b.read_bytes(), "original-b.safetensors")], name="Bee")
    la, lb = hashed(a, user), hashed(b, user)
    for lf in (la, lb):
        local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    assert civitai.count("POST", "/api/v1/model-versions/by-hash") == 1
    ma, mb = Match.objects.get(local_file=la), Match.objects.get(local_file=lb)
    assert (ma.kind, ma.source_file.version.model.name) == ("exact", "Cool")
    assert mb.kind == "renamed" and "original-b.safetensors" in mb.evidence
    version = ma.source_file.version
    assert version.base_model == "SDXL 1.0" and version.trained_words == ["fakeword"]


def test_request_economy_250_known_files_of_one_version_cost_2_requests_and_a_rerun_costs_0(civitai, user):
    """More than one POST's worth: by-hash/ids says which hashes hit which versions, then one hash per
    version fetches it whole (every file of the version comes with it)."""
    data = [bytes([i % 256, i // 256]) * 40 for i in range(250)]
    seed(civitai, [civitai_file(d, f"f{i}.safetensors") for i, d in enumerate(data)])
    for i, d in enumerate(data):
        lf = LocalFile.objects.create(owner=user, origin="pushed", path=f"/remote/f{i}", name=f"f{i}.safetensors", status="done")
        FileHashes.objects.create(local_file=lf, size=len(d), sha256=hashlib.sha256(d).hexdigest(), source="pushed")
        local_file_identify(local_file_id=lf.pk)
    run = civitai_lookup_run(client=client_for(civitai))
    assert (run.requests, run.hits) == (2, 250)
    assert civitai.count("POST", "/api/v1/model-versions/by-hash/ids") == 1
    assert Match.objects.filter(kind="exact").count() == 250
    civitai.reset_log()
    for lf in LocalFile.objects.all():
        local_file_identify(local_file_id=lf.pk)  # exact matches are known: no lookup requested
    assert civitai_lookup_run(client=client_for(civitai)).requests == 0
    assert civitai.requests == []


def test_sibling_files_of_a_version_identify_later_copies_without_a_request(civitai, model_root, user):
    fp16 = write_safetensors(model_root / "m-fp16.safetensors", payload=b"\x01" * 64)
    (model_root / "other").mkdir()
    fp32 = write_safetensors(model_root / "other" / "m-fp32.safetensors", payload=b"\x02" * 128)
    seed(civitai, [civitai_file(fp16.read_bytes(), "m-fp16.safetensors"), civitai_file(fp32.read_bytes(), "m-fp32.safetensors", fp="fp32")])
    l16 = hashed(fp16, user)
    local_file_identify(local_file_id=l16.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    civitai.reset_log()
    l32 = hashed(fp32, user)
    matches = local_file_identify(local_file_id=l32.pk)
    assert [m.kind for m in matches] == ["exact"] and civitai.requests == []


def test_sha256_miss_falls_back_to_autov3_and_finds_same_weights(civitai, model_root, user):
    published = write_safetensors(model_root / "pub.safetensors", payload=b"W" * 256, metadata={"a": "1"})
    edited = write_safetensors(model_root / "edited.safetensors", payload=b"W" * 256, metadata={"trained": "by me"})
    entry = civitai_file(published.read_bytes(), "pub.safetensors")
    seed(civitai, [entry])
    # Civitai only knows the published file, so the edited copy's SHA256 misses.
    SourceFile.objects.all().delete()
    lf = hashed(edited, user)
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    gets = [p for m, p, _ in civitai.requests if m == "GET"]
    assert any(p.endswith(lf.hashes.autov3.upper()) for p in gets)
    [match] = Match.objects.filter(local_file=lf)
    assert match.kind == "same-weights" and "AutoV3" in match.evidence
    assert CivitaiLookup.objects.get(kind="SHA256").state == "miss"


def test_miss_is_cached_and_not_asked_again(civitai, model_root, user):
    f = write_safetensors(model_root / "unknown.safetensors", payload=b"?" * 50)
    lf = hashed(f, user)
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    asked = len(civitai.requests)
    assert asked >= 1 and not Match.objects.exists()
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    assert len(civitai.requests) == asked
    # ... until the cache time is over.
    CivitaiLookup.objects.update(checked_at="2000-01-01T00:00:00Z")
    assert civitai_refresh_stale() == CivitaiLookup.objects.count()


def test_rate_limit_keeps_the_lookup_and_a_later_run_finishes_it(civitai, model_root, user):
    f = write_safetensors(model_root / "x.safetensors", payload=b"x" * 10)
    seed(civitai, [civitai_file(f.read_bytes(), "x.safetensors")])
    lf = hashed(f, user)
    local_file_identify(local_file_id=lf.pk)
    civitai.fail_next(2, status=429)  # no Retry-After, as Cloudflare mostly sends
    with pytest.raises(CivitaiUnavailable):
        civitai_lookup_run(client=client_for(civitai))
    row = CivitaiLookup.objects.get()
    assert row.state == "pending" and row.not_before is not None and "retry" in row.last_error
    CivitaiLookup.objects.update(not_before=None)  # time passes
    civitai_batch_and_rematch(client=client_for(civitai))
    assert CivitaiLookup.objects.get().state == "hit"
    assert Match.objects.get(local_file=lf).kind == "exact"


def test_final_4xx_is_an_error_not_retried(civitai, model_root, user):
    f = write_safetensors(model_root / "x.safetensors", payload=b"x" * 10)
    lf = hashed(f, user)
    local_file_identify(local_file_id=lf.pk)
    civitai.fail_next(1, status=400, body={"error": "bad"})
    civitai_lookup_run(client=client_for(civitai))
    row = CivitaiLookup.objects.get(kind="SHA256")
    assert row.state == "error" and civitai.count("POST", "/api/v1/model-versions/by-hash") == 1


def test_dead_workers_claim_expires(civitai, model_root, user):
    f = write_safetensors(model_root / "x.safetensors", payload=b"x" * 10)
    seed(civitai, [civitai_file(f.read_bytes(), "x.safetensors")])
    lf = hashed(f, user)
    local_file_identify(local_file_id=lf.pk)
    CivitaiLookup.objects.update(state="running", claimed_at="2000-01-01T00:00:00Z")  # its worker died
    civitai_lookup_run(client=client_for(civitai))
    assert CivitaiLookup.objects.get().state == "hit"


def test_converted_and_precision_matches_go_through_an_identified_local_file(civitai, user):
    seed(civitai, [{"name": "model.safetensors", "hashes": file_hashes(sha256="a" * 64)}], name="Known")
    client = client_for(civitai)
    known = _fingerprinted(user, "model.safetensors", fmt="safetensors", content_id="c1", precision_id="p1", sha="a" * 64)
    local_file_identify(local_file_id=known.pk)
    civitai_batch_and_rematch(client=client)
    ckpt = _fingerprinted(user, "model.ckpt", fmt="torch-zip", content_id="c1", precision_id="p1", sha="b" * 64)
    fp32 = _fingerprinted(user, "model-fp32.safetensors", fmt="safetensors", content_id="c2", precision_id="p1", sha="c" * 64)
    kinds = {lf.name: [(m.kind, m.via_id) for m in local_file_match(local_file_id=lf.pk)] for lf in (ckpt, fp32)}
    assert kinds == {"model.ckpt": [("converted", known.pk)], "model-fp32.safetensors": [("precision", known.pk)]}


def test_partial_match_for_a_finetune_sharing_vae_and_text_encoder(civitai, user):
    seed(civitai, [{"name": "base.safetensors", "hashes": file_hashes(sha256="a" * 64)}], name="Base")
    comps = {"unet": {"content_id": "u1", "precision_id": "u1", "nbytes": 800},
             "vae": {"content_id": "v1", "precision_id": "v1", "nbytes": 100},
             "text_encoder": {"content_id": "t1", "precision_id": "t1", "nbytes": 100}}
    base = _fingerprinted(user, "base.safetensors", fmt="safetensors", content_id="c1", precision_id="p1", sha="a" * 64, components=comps)
    local_file_identify(local_file_id=base.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    tuned = _fingerprinted(user, "tuned.safetensors", fmt="safetensors", content_id="c9", precision_id="p9", sha="d" * 64,
                           components={**comps, "unet": {"content_id": "u2", "precision_id": "u2", "nbytes": 800}})
    [m] = local_file_match(local_file_id=tuned.pk)
    assert m.kind == "partial" and m.share == pytest.approx(0.2) and "vae" in m.evidence


def test_short_hash_match_is_weak_and_says_which_kind(user):
    from models_catalog.models import Source, SourceModel, SourceVersion

    model = SourceModel.objects.create(source=Source.CIVITAI, external_id="1", name="Old")
    version = SourceVersion.objects.create(model=model, external_id="1")
    SourceFile.objects.create(version=version, external_id="1", name="old.ckpt", crc32="85114a0d")
    lf = _fingerprinted(user, "x.ckpt", fmt="torch-zip", content_id="", precision_id="", sha="e" * 64)
    FileHashes.objects.filter(local_file=lf).update(crc32="85114a0d")
    [m] = local_file_match(local_file_id=lf.pk)
    assert m.kind == "short-hash" and "CRC32" in m.evidence and "weak" in m.evidence


def test_evidence_never_names_another_users_file(civitai, user, other_user):
    seed(civitai, [{"name": "model.safetensors", "hashes": file_hashes(sha256="a" * 64)}], name="Known")
    theirs = _fingerprinted(other_user, "bobs-private-name.safetensors", fmt="safetensors", content_id="c1", precision_id="p1", sha="a" * 64)
    local_file_identify(local_file_id=theirs.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    mine = _fingerprinted(user, "model.ckpt", fmt="torch-zip", content_id="c1", precision_id="p1", sha="b" * 64)
    [m] = local_file_match(local_file_id=mine.pk)
    assert m.kind == "converted" and m.via is None
    assert "bobs-private-name" not in m.evidence and "another user" in m.evidence


def test_file_matched_through_a_sibling_of_the_same_batch_is_matched(civitai, user):
    """The converted file has a lower id than the exact one: one rematch pass must still link it."""
    seed(civitai, [{"name": "model.safetensors", "hashes": file_hashes(sha256="a" * 64)}], name="Known")
    ckpt = _fingerprinted(user, "model.ckpt", fmt="torch-zip", content_id="c1", precision_id="p1", sha="b" * 64)
    known = _fingerprinted(user, "model.safetensors", fmt="safetensors", content_id="c1", precision_id="p1", sha="a" * 64)
    for lf in (ckpt, known):
        local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    assert [m.kind for m in Match.objects.filter(local_file=ckpt)] == ["converted"]


def test_file_page_shows_each_lookups_outcome_and_time(civitai, model_root, user, client):
    f = write_safetensors(model_root / "x.safetensors", payload=b"x" * 10)
    lf = hashed(f, user)
    local_file_identify(local_file_id=lf.pk)
    civitai.fail_next(2, status=503)
    with pytest.raises(CivitaiUnavailable):
        civitai_lookup_run(client=client_for(civitai))
    client.force_login(user)
    html = client.get(f"/files/{lf.pk}/").content.decode()
    assert "Civitai lookups" in html and lf.hashes.sha256.upper() in html and "will retry" in html
    CivitaiLookup.objects.update(not_before=None)
    civitai_lookup_run(client=client_for(civitai))
    html = client.get(f"/files/{lf.pk}/").content.decode()
    assert "lookup-miss" in html and " ms" in html


def test_models_known_from_a_by_hash_answer_are_completed_later(civitai, user):
    from models_catalog.models import SourceModel, SourceVersion
    from models_catalog.services.civitai_lookup import civitai_models_complete

    model_id = civitai.add_model(name="Complete me", description="<p>full text</p>")
    civitai.add_version(model_id, id=501, name="v1", files=[{"name": "v1.safetensors", "hashes": file_hashes(sha256="a" * 64)}])
    civitai.add_version(model_id, id=502, name="v2", files=[{"name": "v2.safetensors", "hashes": file_hashes(sha256="b" * 64)}])
    lf = _fingerprinted(user, "v1.safetensors", fmt="safetensors", content_id="", precision_id="", sha="a" * 64)
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    assert SourceModel.objects.get().raw == {} and SourceVersion.objects.count() == 1
    assert civitai_models_complete(client=client_for(civitai)) == 1
    model = SourceModel.objects.get()
    assert model.description == "<p>full text</p>" and model.raw
    assert set(SourceVersion.objects.values_list("external_id", flat=True)) == {"501", "502"}
    assert civitai_models_complete(client=client_for(civitai)) == 0


# --- request economy: what is worth asking after a SHA256 miss ---------------------------------


def _pushed(owner, name, *, fmt, sha="", blake="", autov3="") -> LocalFile:
    lf = LocalFile.objects.create(owner=owner, origin="pushed", path=f"/r/{name}", name=name, status="done",
                                  format=fmt, size=100)
    FileHashes.objects.create(local_file=lf, size=100, sha256=sha, blake3=blake, autov3=autov3, source="pushed")
    return lf


def test_sha256_miss_asks_no_blake3_and_a_pickle_file_no_autov3(civitai, user):
    """Civitai stores every hash of every file: a SHA256 miss is a BLAKE3 miss too, and AutoV3 exists
    only for safetensors. An unknown .ckpt costs its share of one POST; an unknown safetensors one GET more."""
    ckpt = _pushed(user, "mine.ckpt", fmt="torch-zip", sha="c" * 64, blake="d" * 64, autov3="e" * 12)
    st = _pushed(user, "mine.safetensors", fmt="safetensors", sha="1" * 64, blake="2" * 64, autov3="3" * 12)
    for lf in (ckpt, st):
        local_file_identify(local_file_id=lf.pk)
    run = civitai_lookup_run(client=client_for(civitai))
    assert run.requests == 2
    assert civitai.count("POST", "/api/v1/model-versions/by-hash") == 1
    assert [p for m, p, _ in civitai.requests if m == "GET"] == ["/api/v1/model-versions/by-hash/" + "3" * 12]
    assert not CivitaiLookup.objects.filter(kind="BLAKE3").exists()


def test_imported_row_without_sha256_is_asked_by_blake3(civitai, user):
    lf = _pushed(user, "imported.safetensors", fmt="", blake="4" * 64)
    local_file_identify(local_file_id=lf.pk)
    assert CivitaiLookup.objects.get().kind == "BLAKE3"


def test_no_autov3_get_for_a_file_the_fingerprint_already_ties_to_a_known_model(civitai, user):
    seed(civitai, [{"name": "model.safetensors", "hashes": file_hashes(sha256="a" * 64)}], name="Known")
    known = _fingerprinted(user, "model.safetensors", fmt="safetensors", content_id="c1", precision_id="p1", sha="a" * 64)
    cast = _fingerprinted(user, "model-fp16.safetensors", fmt="safetensors", content_id="c2", precision_id="p1",
                          sha="b" * 64)
    FileHashes.objects.filter(local_file=cast).update(autov3="f" * 12)
    for lf in (known, cast):
        local_file_identify(local_file_id=lf.pk)
    run = civitai_lookup_run(client=client_for(civitai))
    assert run.requests == 1  # one POST for both; the cast is a precision variant, no AutoV3 GET
    assert Match.objects.get(local_file=cast).kind == "precision"
    assert not CivitaiLookup.objects.filter(kind="AutoV3").exists()


def test_many_mostly_unknown_files_cost_one_ids_call_and_one_fetch(civitai, user):
    """250 SHA256 of which 200 are unknown: by-hash/ids (1) + the one known version (1), not 3 POSTs."""
    known = [bytes([i]) * 32 for i in range(50)]
    seed(civitai, [{"name": f"k{i}.safetensors", "hashes": file_hashes(sha256=hashlib.sha256(d).hexdigest())}
                   for i, d in enumerate(known)])
    for i, d in enumerate(known):
        _pushed(user, f"k{i}.bin", fmt="torch-zip", sha=hashlib.sha256(d).hexdigest())
    for i in range(200):
        _pushed(user, f"u{i}.bin", fmt="torch-zip", sha=hashlib.sha256(b"unknown%d" % i).hexdigest())
    for lf in LocalFile.objects.all():
        local_file_identify(local_file_id=lf.pk)
    run = civitai_lookup_run(client=client_for(civitai))
    assert (run.requests, run.hits, run.misses) == (2, 50, 200)
    assert Match.objects.filter(kind="renamed").count() == 50


def test_lookups_wait_for_files_still_being_hashed_but_not_forever(civitai, model_root, user):
    from datetime import timedelta

    from django.utils import timezone

    from models_catalog.services.civitai_lookup import GATHER_FOR, gather_wait

    lf = _pushed(user, "done.safetensors", fmt="safetensors", sha="9" * 64)
    local_file_identify(local_file_id=lf.pk)
    assert gather_wait() is None  # nothing else on its way: ask now
    busy = LocalFile.objects.create(owner=user, origin="registered", path=str(model_root / "big"), name="big",
                                    status="hashing", heartbeat_at=timezone.now())
    wait = gather_wait()
    assert wait is not None and 0 < wait <= 2
    run = civitai_lookup_run(client=client_for(civitai), gather=True)
    assert run.wait_seconds is not None and civitai.requests == []
    CivitaiLookup.objects.update(created_at=timezone.now() - GATHER_FOR - timedelta(seconds=1))
    assert gather_wait() is None  # the oldest waited long enough
    CivitaiLookup.objects.update(created_at=timezone.now())
    LocalFile.objects.filter(pk=busy.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1),
                                                updated_at=timezone.now() - timedelta(hours=1))
    assert gather_wait() is None  # a silent row belongs to a dead worker: not worth waiting for


def test_final_errors_are_asked_again_by_the_hourly_refresh(civitai, user):
    from datetime import timedelta

    from django.utils import timezone

    lf = _pushed(user, "x.safetensors", fmt="safetensors", sha="8" * 64)
    local_file_identify(local_file_id=lf.pk)
    CivitaiLookup.objects.update(state="error", last_error="odd answer", checked_at=timezone.now())
    assert civitai_refresh_stale() == 0  # too recent: not hammered
    CivitaiLookup.objects.update(checked_at=timezone.now() - timedelta(hours=2))
    assert civitai_refresh_stale() == 1
    assert CivitaiLookup.objects.get().state == "pending"


@pytest.mark.parametrize("answer", [
    {"status": 200, "body": {"unexpected": "shape"}},  # a JSON object where a list belongs
    {"status": 200, "body": [{"id": "not-an-int"}]},  # a version without an integer id
    {"status": 200, "html": True},  # a challenge page with a success status
    {"status": 503},
])
def test_an_odd_civitai_answer_is_retried_then_final_with_a_retry_time(civitai, model_root, user, answer, monkeypatch):
    from models_catalog.identity import file_identities
    from models_catalog.services import civitai_lookup

    MAX_ATTEMPTS = 3
    monkeypatch.setattr(civitai_lookup, "MAX_ATTEMPTS", MAX_ATTEMPTS)  # the real bound is larger: fewer rounds here

    f = write_safetensors(model_root / "x.safetensors", payload=b"odd" * 10)
    seed(civitai, [civitai_file(f.read_bytes(), "x.safetensors")])
    lf = hashed(f, user)
    def failing_run():
        civitai.fail_next(2, **answer)  # the client's one in-process retry (5xx, HTML) meets it too
        with pytest.raises(CivitaiUnavailable):
            civitai_lookup_run(client=client_for(civitai))
        civitai._faults.clear()

    failing_run()
    row = CivitaiLookup.objects.get(kind="SHA256")
    assert row.state == "pending" and row.not_before is not None and row.attempts == 1
    assert file_identities([lf], viewer=user)[lf.pk].state == "waiting"
    for _ in range(MAX_ATTEMPTS - 1):
        CivitaiLookup.objects.update(not_before=None)  # time passes
        failing_run()
    row.refresh_from_db()
    assert row.state == "error" and f"after {MAX_ATTEMPTS} attempts" in row.last_error
    identity = file_identities([lf], viewer=user)[lf.pk]
    assert identity.state == "unknown" and "Civitai could not be asked" in identity.summary
    assert "will retry after" in identity.summary
    # The hourly refresh asks again later, and then the file is identified.
    CivitaiLookup.objects.update(checked_at="2000-01-01T00:00:00Z")
    assert civitai_refresh_stale() == 1
    civitai_lookup_run(client=client_for(civitai))
    assert Match.objects.get(local_file=lf).kind == "exact"


def test_retry_after_is_waited_out_by_a_task_retry_not_a_sleep(civitai, model_root, user):
    """A 429 with Retry-After: 120 releases the rows with a not-before time; nothing sleeps 120 s."""
    from models_catalog.services.civitai_lookup import civitai_client as real_client

    slept = []
    client = real_client(base_url=civitai.base_url, sleep=slept.append)
    f = write_safetensors(model_root / "x.safetensors", payload=b"ra" * 10)
    hashed(f, user)
    civitai.fail_next(1, status=429, headers={"Retry-After": "120"})
    with pytest.raises(CivitaiUnavailable) as info:
        civitai_lookup_run(client=client)
    assert slept == [] and info.value.retry_after == 120
    row = CivitaiLookup.objects.get()
    assert row.state == "pending" and (row.not_before - row.created_at).total_seconds() > 100
