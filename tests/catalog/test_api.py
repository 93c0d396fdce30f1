"""REST API (/api/v1/): every endpoint's happy path and its error paths, in the one error format."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from models_catalog.models import ApiToken, FileHashes, FolderMember, Job, LocalFile, SourceFile, SourceVersion
from models_catalog.services.lookup import hash_lookup
from models_catalog.services.tokens import token_digest
from tests.model_builders import write_safetensors  # noqa: F401
from tests.factories import catalog_file, error_of, hashes_of, local_file, match, push_record, token_client  # noqa: F401
from workers.hash_parse import HashQueryError
from workers.hash_query import parse_hash_query

pytestmark = pytest.mark.django_db


# --- helpers (the shared ones live in tests/factories.py) ---------------


def results(resp) -> list[dict]:
    assert resp.status_code == 200, resp.content
    return resp.json()["results"]


@pytest.fixture
def alice(user):
    return token_client(user)


# --- auth -------------------------------------------------------------------------------


def test_token_for_username_and_password_authenticates_scripts(user):
    resp = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123", "name": "nightly"},
                            format="json")
    assert resp.status_code == 200
    key = resp.json()["token"]
    token = ApiToken.objects.get(user=user)
    assert token.name == "nightly" and resp.json()["prefix"] == token.prefix == key[:12]
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert script.get("/api/v1/files/").status_code == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None


def test_tokens_are_stored_as_a_hash_never_in_clear(user):
    key = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123"},
                           format="json").json()["token"]
    token = ApiToken.objects.get(user=user)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() == token_digest(key)
    stored = [str(v) for v in ApiToken.objects.values_list(flat=False).get()]
    assert not any(key in v for v in stored)


def test_each_token_request_makes_a_new_token_and_the_earlier_ones_keep_working(user):
    keys = [APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123"},
                             format="json").json()["token"] for _ in range(2)]
    assert keys[0] != keys[1]
    for key in keys:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/v1/files/").status_code == 200


def test_a_token_of_an_inactive_user_is_refused(user):
    client = token_client(user)
    user.is_active = False
    user.save()
    resp = client.get("/api/v1/files/")
    assert resp.status_code == 401 and error_of(resp)["code"] == "authentication_failed"


def test_token_requests_beyond_the_per_user_limit_are_refused(user, monkeypatch):
    monkeypatch.setattr("models_catalog.services.tokens.MAX_TOKENS_PER_USER", 1)
    body = {"username": "alice", "password": "pw-alice-123"}
    assert APIClient().post("/api/v1/auth/token/", body, format="json").status_code == 200
    resp = APIClient().post("/api/v1/auth/token/", body, format="json")
    assert resp.status_code == 400 and error_of(resp)["code"] == "too_many_tokens"
    assert ApiToken.objects.filter(user=user).count() == 1


def test_token_with_wrong_password_is_refused(user):
    resp = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "invalid_input" and "credentials" in err["message"] and "non_field_errors" in err["detail"]


def test_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    resp = client.get("/api/v1/files/")
    assert resp.status_code == 401 and error_of(resp)["code"] == "authentication_failed"
    assert resp["WWW-Authenticate"] == "Token"


def test_token_endpoint_is_throttled(user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "2/minute")
    for _ in range(2):
        APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "guess"}, format="json")
    resp = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123"}, format="json")
    assert resp.status_code == 429 and error_of(resp)["code"] == "throttled"


# --- lookup ----------------------------------------------------------------------------


def _as_json(value):
    return json.loads(json.dumps(value))


def test_lookup_by_sha256_returns_the_service_results(alice, user):
    sf = catalog_file(data=b"weights-1")
    mine = local_file(user, "renamed.safetensors", data=b"weights-1")
    sha = hashlib.sha256(b"weights-1").hexdigest().upper()
    resp = alice.get("/api/v1/lookup/", {"q": sha})
    assert resp.status_code == 200
    body = resp.json()
    assert body == _as_json([r.to_json() for r in hash_lookup(text=sha, user=user)])
    sources = {(m["source"], m["model_id"], m["local_file_id"]) for m in body[0]["matches"]}
    assert ("civitai", sf.version.model_id, None) in sources and ("my files", None, mine.pk) in sources
    assert body[0]["civitai"] == "known here"
    assert set(body[0]) == {"query", "label", "kinds_tried", "note", "matches", "civitai"}
    assert set(body[0]["matches"][0]) == {"source", "model", "version", "file", "match", "evidence", "url",
                                          "model_id", "local_file_id", "hash_kind", "summary", "owner"}


def test_lookup_post_reads_a_pasted_infotext(alice):
    catalog_file(data=b"weights-2")
    autov2 = hashlib.sha256(b"weights-2").hexdigest()[:10]
    text = f"a cat\nSteps: 20, Sampler: Euler, Model hash: {autov2}, Model: dream"
    resp = alice.post("/api/v1/lookup/", {"text": text}, format="json")
    assert resp.status_code == 200
    [result] = resp.json()
    assert result["matches"][0]["hash_kind"] == "AutoV2" and result["matches"][0]["model"] == "Dream Shaper"
    assert result["matches"][0]["match"] == "short-hash"  # ten hex of a SHA256 agree: not proof of the same file
    assert result["label"] == parse_hash_query(text)[0].label and result["label"]


def test_lookup_text_without_a_hash_is_400_with_the_parser_message(alice):
    with pytest.raises(HashQueryError) as expected:
        parse_hash_query("hello world")
    for resp in (alice.get("/api/v1/lookup/", {"q": "hello world"}),
                 alice.post("/api/v1/lookup/", {"text": "hello world"}, format="json")):
        assert resp.status_code == 400
        err = error_of(resp)
        assert err["code"] == "not_a_hash" and err["message"] == str(expected.value)


def test_lookup_without_query_names_the_missing_field(alice):
    resp = alice.get("/api/v1/lookup/")
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "invalid_input" and "q" in err["detail"] and err["message"].startswith("q:")
    resp = alice.post("/api/v1/lookup/", {}, format="json")
    assert resp.status_code == 400 and "text" in error_of(resp)["detail"]


def test_lookup_is_throttled_in_its_own_scope(alice, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "lookup", "2/minute")
    q = {"q": "0123456789"}
    assert [alice.get("/api/v1/lookup/", q).status_code for _ in range(2)] == [200, 200]
    resp = alice.get("/api/v1/lookup/", q)
    assert resp.status_code == 429
    err = error_of(resp)
    assert err["code"] == "throttled" and err["detail"]["wait_seconds"] > 0 and "Retry-After" in resp
    assert alice.get("/api/v1/files/").status_code == 200  # other endpoints are not in that scope


def test_malformed_json_is_400(alice):
    resp = alice.post("/api/v1/lookup/", data="{not json", content_type="application/json")
    assert resp.status_code == 400 and error_of(resp)["code"] == "malformed_request"


def test_oversized_json_body_is_413_before_parsing(alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    resp = alice.post("/api/v1/lookup/", {"text": "a" * 2000}, format="json")
    assert resp.status_code == 413 and error_of(resp)["code"] == "too_large"


# --- files: list, detail, delete --------------------------------------------------------


def test_files_list_filters(alice, user):
    sf = catalog_file(data=b"w")
    exact = local_file(user, "exact.safetensors", data=b"w", format="safetensors", safety_verdict="safe")
    local_file(user, "queued.ckpt", status="queued", format="torch-zip", safety_verdict="dangerous", origin="uploaded")
    match(exact, sf)

    def names(**params):
        return sorted(f["name"] for f in results(alice.get("/api/v1/files/", params)))

    assert names() == ["exact.safetensors", "queued.ckpt"]
    assert names(status="queued") == names(origin="uploaded") == names(format="torch-zip") == ["queued.ckpt"]
    assert names(safety="safe") == names(match="exact") == ["exact.safetensors"]
    assert names(match="none") == ["queued.ckpt"]
    listed = results(alice.get("/api/v1/files/", {"match": "exact"}))[0]
    assert listed["best_match"] == "exact" and listed["sha256"] == hashlib.sha256(b"w").hexdigest().upper()


def test_files_list_rejects_unknown_filter_values(alice):
    resp = alice.get("/api/v1/files/", {"status": "bogus"})
    assert resp.status_code == 400 and "status" in error_of(resp)["detail"]


@pytest.mark.parametrize("form", ["name", "sha256", "SHA256", "prefixed", "autov2", "crc32", "blake3", "member"])
def test_files_search_by_name_or_any_hash(alice, user, form):
    data = b"searchable"
    h = hashes_of(data)
    target = local_file(user, "Target-Model.safetensors", data=data)
    local_file(user, "other.safetensors", data=b"other")
    folder = local_file(user, "diffusers-folder", is_folder=True)
    FolderMember.objects.create(folder=folder, relative_path="unet/x.safetensors", size=3, **hashes_of(b"member"))
    query = {"name": "target-model", "sha256": h["sha256"], "SHA256": h["sha256"].upper(),
             "prefixed": f"sha256:{h['sha256']}", "autov2": h["autov2"].upper(), "crc32": h["crc32"],
             "blake3": f"blake3:{h['blake3']}", "member": hashlib.sha256(b"member").hexdigest()}[form]
    found = [f["id"] for f in results(alice.get("/api/v1/files/", {"search": query}))]
    assert found == ([folder.pk] if form == "member" else [target.pk])


def test_files_cursor_pagination_walks_every_row_once_and_caps_page_size(alice, user, monkeypatch):
    ids = {local_file(user, f"f{i}.safetensors").pk for i in range(5)}
    seen, url, pages = [], "/api/v1/files/?page_size=2", 0
    while url:
        body = alice.get(url).json()
        seen += [f["id"] for f in body["results"]]
        url, pages = body["next"], pages + 1
    assert sorted(seen) == sorted(ids) and len(seen) == 5 and pages == 3
    assert seen == sorted(seen, reverse=True)  # newest first
    monkeypatch.setattr("models_catalog.api.MAX_FILE_PAGE_SIZE", 3)
    assert len(results(alice.get("/api/v1/files/", {"page_size": 1000}))) == 3


def test_file_detail_shows_hashes_members_matches_safety_fingerprint_progress(alice, user):
    data = b"detail-bytes"
    sf = catalog_file("Real Model", data=data, base_model="SDXL 1.0")
    lf = local_file(user, "copy.safetensors", data=data, format="safetensors", safety_verdict="suspicious",
                    safety_findings=[{"opcode": "GLOBAL", "name": "os.system"}], bytes_done=5, bytes_total=12,
                    fingerprint={"version": 1, "content_id": "c" * 64, "precision_id": "p" * 64, "tensors": 2,
                                 "digests": [["x", "y", 1, 1, ""]] * 3, "components": {"unet": {"nbytes": 4}}})
    FileHashes.objects.filter(local_file=lf).update(autov3_full="a" * 64, autov3="a" * 12, embedded_model_hash="0x" + "b" * 64)
    FolderMember.objects.create(folder=lf, relative_path="vae/d.safetensors", size=3, sha256="c" * 64)
    match(lf, sf, kind="renamed", evidence="SHA256 equal, other name")
    body = alice.get(f"/api/v1/files/{lf.pk}/").json()
    h = hashes_of(data)
    assert body["hashes"]["civitai"] == {"SHA256": h["sha256"].upper(), "AutoV1": None, "AutoV2": h["autov2"].upper(),
                                         "AutoV3": "A" * 12, "CRC32": h["crc32"].upper(), "BLAKE3": h["blake3"].upper()}
    assert body["hashes"]["autov3_full"] == "a" * 64
    assert body["hashes"]["embedded"]["sshs_model_hash"] == "0x" + "b" * 64 and body["hashes"]["embedded_differs"] is True
    assert body["members"][0]["relative_path"] == "vae/d.safetensors" and body["members"][0]["hashes"]["SHA256"] == "C" * 64
    [m] = body["matches"]
    assert m["kind"] == "renamed" and m["evidence"] == "SHA256 equal, other name"
    assert m["source"]["model"] == "Real Model" and m["source"]["base_model"] == "SDXL 1.0"
    assert m["source"]["file"]["hashes"]["SHA256"] == h["sha256"].upper()
    assert body["safety"] == {"verdict": "suspicious", "findings": [{"opcode": "GLOBAL", "name": "os.system"}]}
    assert body["fingerprint"]["content_id"] == "c" * 64 and "digests" not in body["fingerprint"]
    assert body["progress"] == {"status": "done", "bytes_done": 5, "bytes_total": 12, "percent": 100, "error": ""}


def test_file_detail_of_a_file_not_hashed_yet(alice, user):
    lf = local_file(user, status="hashing", bytes_done=25, bytes_total=100)
    body = alice.get(f"/api/v1/files/{lf.pk}/").json()
    assert body["hashes"] is None and body["matches"] == [] and body["progress"]["percent"] == 25


def test_missing_file_is_404_in_the_error_format(alice):
    resp = alice.get("/api/v1/files/999999/")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


def test_delete_forgets_the_row_but_never_the_file_on_disk(alice, user, tmp_path):
    on_disk = write_safetensors(tmp_path / "keep.safetensors")
    lf = local_file(user, data=b"x")
    LocalFile.objects.filter(pk=lf.pk).update(path=str(on_disk))
    resp = alice.delete(f"/api/v1/files/{lf.pk}/")
    assert resp.status_code == 200 and resp.json()["stored_copy"] == "not-stored" and resp.json()["freed_bytes"] == 0
    assert not LocalFile.objects.filter(pk=lf.pk).exists() and not FileHashes.objects.filter(local_file_id=lf.pk).exists()
    assert on_disk.exists()
    assert alice.delete(f"/api/v1/files/{lf.pk}/").status_code == 404


def test_unsupported_method_is_405_in_the_error_format(alice, user):
    lf = local_file(user)
    resp = alice.put(f"/api/v1/files/{lf.pk}/", {}, format="json")
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"


def test_unknown_api_path_is_a_json_404(alice):
    resp = alice.get("/api/v1/no-such-thing/")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    browser = APIClient(enforce_csrf_checks=True)  # no CSRF page either: it changes nothing
    assert error_of(browser.delete("/api/v1/files/-1/"))["code"] == "not_found"


# --- files: upload --------------------------------------------------------------------------


def test_upload_stores_the_file_and_queues_it(alice, user, model_root):
    f = write_safetensors(model_root / "up.safetensors", payload=b"\x05" * 32)
    resp = alice.post("/api/v1/files/upload/", {"file": SimpleUploadedFile("../x/up.safetensors", f.read_bytes())},
                      format="multipart")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    lf = LocalFile.objects.get(pk=body["id"])
    assert lf.owner == user and lf.origin == "uploaded" and lf.name == "up.safetensors" == body["name"]
    assert Path(lf.path).read_bytes() == f.read_bytes() and Path(lf.path).is_relative_to(model_root.parent / "data" / "uploads")
    assert body["progress"]["status"] == "queued" and body["progress"]["bytes_total"] == f.stat().st_size


@pytest.mark.parametrize("size", [5_000, 300_000])  # refused up front, and while streaming
def test_upload_over_the_limit_is_413_and_nothing_is_kept(alice, model_root, settings, size):
    settings.MAX_UPLOAD_BYTES = 4_000 if size == 5_000 else 250_000
    resp = alice.post("/api/v1/files/upload/", {"file": SimpleUploadedFile("big.bin", b"x" * size)}, format="multipart")
    assert resp.status_code == 413
    err = error_of(resp)
    assert err["code"] == "too_large" and f"{settings.MAX_UPLOAD_BYTES:,}" in err["message"]
    assert not LocalFile.objects.exists() and not any((model_root.parent / "data" / "uploads").iterdir())


def test_upload_declared_far_over_the_limit_is_413_before_reading(alice, model_root, settings):
    settings.MAX_UPLOAD_BYTES = 10
    resp = alice.post("/api/v1/files/upload/", {"file": SimpleUploadedFile("big.bin", b"x" * 100_000)}, format="multipart")
    assert resp.status_code == 413 and not LocalFile.objects.exists()


def test_upload_without_file_or_empty_file_is_400(alice, model_root):
    resp = alice.post("/api/v1/files/upload/", {"other": "x"}, format="multipart")
    assert resp.status_code == 400 and error_of(resp)["code"] == "no_file"
    resp = alice.post("/api/v1/files/upload/", {"file": SimpleUploadedFile("e.bin", b"")}, format="multipart")
    assert resp.status_code == 400 and "empty" in error_of(resp)["message"]
    assert not LocalFile.objects.exists()


def test_upload_as_json_is_415(alice, model_root):
    resp = alice.post("/api/v1/files/upload/", {"file": "abc"}, format="json")
    assert resp.status_code == 415 and error_of(resp)["code"] == "unsupported_media_type"


# --- files: register ----------------------------------------------------------------------------


def test_register_queues_then_reports_unchanged(alice, user, model_root, django_capture_on_commit_callbacks, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.hash_local_file, "delay", lambda pk: None)  # sent (no worker runs it)
    a = write_safetensors(model_root / "a.safetensors")
    with django_capture_on_commit_callbacks(execute=True):
        resp = alice.post("/api/v1/files/register/", {"paths": [str(a)]}, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    lf = LocalFile.objects.get(owner=user, path=str(a))
    assert body == {"counts": {"queued": 1, "unchanged": 0, "failed": 0, "refused": 0},
                    "queued": [lf.pk], "unchanged": [], "failed": [], "refused": []}
    again = alice.post("/api/v1/files/register/", {"paths": [str(a)]}, format="json").json()
    assert again["unchanged"] == [lf.pk] and again["queued"] == []


def test_register_refuses_paths_outside_the_roots_without_saying_whether_they_exist(alice, model_root, tmp_path):
    outside = write_safetensors(tmp_path / "outside.safetensors")
    (model_root / "escape").symlink_to(outside)
    paths = [str(outside), str(tmp_path / "does-not-exist"), str(model_root / ".." / "outside.safetensors"),
             str(model_root / "escape"), str(model_root / "missing.safetensors")]
    body = alice.post("/api/v1/files/register/", {"paths": paths}, format="json").json()
    reasons = {r["path"]: r["reason"] for r in body["refused"]}
    assert body["queued"] == [] and set(reasons) == set(paths)
    generic = {reasons[p] for p in paths[:3]}
    assert all("outside the model roots" in r and "no such file" not in r for r in generic)
    assert reasons[paths[0]] == f"{paths[0]} is outside the model roots ({model_root})"
    assert "outside the model roots" in reasons[paths[3]]  # a symlink inside the roots: the service explains
    assert "no such file" in reasons[paths[4]]  # inside the roots the caller may know what is missing
    assert not LocalFile.objects.exists()


@pytest.mark.parametrize("body", [{}, {"paths": []}, {"paths": "not-a-list"}, {"paths": ["a\x00b"]}])
def test_register_bad_input_is_400(alice, model_root, body):
    resp = alice.post("/api/v1/files/register/", body, format="json")
    assert resp.status_code == 400 and "paths" in error_of(resp)["detail"]


# --- files: push -------------------------------------------------------------------------------


def test_push_stores_good_records_and_reports_bad_ones_by_index(alice, user, tmp_path):
    good = [push_record(tmp_path, "one.safetensors", b"\x01" * 16), push_record(tmp_path, "two.safetensors", b"\x02" * 16)]
    bad_hash = {**good[0], "path": "D:\\models\\bad.safetensors", "hashes": {**good[0]["hashes"], "SHA256": "xyz"}}
    files = [good[0], "not an object", bad_hash, good[1]]
    resp = alice.post("/api/v1/files/push/", {"host": "gpu-box", "files": files}, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert set(body) == {"created", "updated", "unchanged", "ids", "errors"}
    assert body["created"] == 2 and body["updated"] == 0 and body["unchanged"] == 0
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert body["errors"][1]["path"] == "D:\\models\\bad.safetensors" and body["errors"][1]["error"]
    stored = LocalFile.objects.filter(pk__in=body["ids"]).order_by("pk")
    assert [lf.name for lf in stored] == ["one.safetensors", "two.safetensors"]
    assert all(lf.owner == user and lf.origin == "pushed" and lf.host == "gpu-box" for lf in stored)
    assert stored[0].hashes.sha256 == good[0]["hashes"]["SHA256"].lower() and stored[0].hashes.source == "pushed"
    again = alice.post("/api/v1/files/push/", {"host": "gpu-box", "files": good}, format="json").json()
    assert again["unchanged"] == 2 and again["created"] == 0 and again["ids"] == body["ids"]


def test_push_rejected_batch_is_400(alice, tmp_path):
    record = push_record(tmp_path, "one.safetensors", b"\x01" * 16)
    resp = alice.post("/api/v1/files/push/", {"host": "gpu-box", "files": [record] * 501}, format="json")
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "push_rejected" and "500" in err["message"]
    assert not LocalFile.objects.exists()


@pytest.mark.parametrize("body", [{"files": []}, {"host": "", "files": []}, {"host": "h"}, {"host": "h", "files": {}}])
def test_push_malformed_request_is_400_with_field_detail(alice, body):
    resp = alice.post("/api/v1/files/push/", body, format="json")
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_input" and error_of(resp)["detail"]


# --- the catalog ---------------------------------------------------------------------------


def test_models_list_counts_versions_base_models_and_my_copies(alice, user):
    sf = catalog_file("Alpha", data=b"alpha", base_model="SD 1.5")
    SourceVersion.objects.create(model=sf.version.model, external_id="v2", name="v2", base_model="SDXL 1.0")
    catalog_file("Beta", data=b"beta", type_="LORA")
    match(local_file(user, "a1.safetensors", data=b"alpha"), sf)
    match(local_file(user, "a2.safetensors", data=b"alpha"), sf, kind="renamed")
    rows = {m["name"]: m for m in results(alice.get("/api/v1/models/"))}
    assert rows["Alpha"]["versions_count"] == 2 and rows["Alpha"]["base_models"] == ["SD 1.5", "SDXL 1.0"]
    assert rows["Alpha"]["local_copies"] == 2 and rows["Beta"]["local_copies"] == 0
    assert rows["Alpha"]["source"] == "civitai" and rows["Beta"]["type"] == "LORA"


def test_models_filters_search_and_ordering(alice, user):
    a = catalog_file("Alpha", data=b"alpha", words=("moonlit castle",), base_model="SD 1.5")
    catalog_file("Beta", data=b"beta", type_="LORA", base_model="Pony")
    catalog_file("Gamma", data=b"gamma", source="huggingface")
    match(local_file(user, data=b"alpha"), a, kind="converted")

    def names(**params):
        return [m["name"] for m in results(alice.get("/api/v1/models/", params))]

    assert names(type="lora") == ["Beta"] and names(base_model="pony") == ["Beta"]
    assert names(source="huggingface") == ["Gamma"]
    assert names(match="converted") == ["Alpha"] and names(match="exact") == []
    assert names(mine="true") == ["Alpha"] and sorted(names(mine="false")) == ["Beta", "Gamma"]
    assert names(search="alp") == names(search="moonlit") == ["Alpha"]
    assert names(search=hashlib.sha256(b"beta").hexdigest().upper()) == ["Beta"]
    assert names(search=hashes_of(b"gamma")["autov2"]) == ["Gamma"]
    SourceFile.objects.filter(version__model__name="Gamma").update(git_sha1="ab" * 20)  # a Hub file's git blob id
    assert names(search="AB" * 20) == ["Gamma"] and names(search="ab" * 19) == []
    assert names(ordering="name") == ["Alpha", "Beta", "Gamma"] and names(ordering="-name") == ["Gamma", "Beta", "Alpha"]
    resp = alice.get("/api/v1/models/", {"source": "elsewhere"})
    assert resp.status_code == 400 and "source" in error_of(resp)["detail"]


def test_model_detail_has_versions_files_hashes_and_my_matched_files(alice, user):
    sf = catalog_file("Alpha", data=b"alpha")
    lf = local_file(user, "mine.safetensors", data=b"alpha")
    match(lf, sf, evidence="SHA256 equal")
    body = alice.get(f"/api/v1/models/{sf.version.model_id}/").json()
    [version] = body["versions"]
    assert version["id"] == sf.version_id and version["files"][0]["hashes"]["SHA256"] == sf.sha256.upper()
    assert body["my_local_files"] == [{"local_file_id": lf.pk, "owner": "", "name": "mine.safetensors", "path": lf.path, "host": "",
                                       "source_file_id": sf.pk, "version_id": sf.version_id, "kind": "exact",
                                       "evidence": "SHA256 equal"}]
    assert alice.get("/api/v1/models/999999/").status_code == 404


def test_version_detail(alice, user):
    sf = catalog_file("Alpha", data=b"alpha", words=("w1", "w2"))
    match(local_file(user, data=b"alpha"), sf)
    body = alice.get(f"/api/v1/versions/{sf.version_id}/").json()
    assert body["model"]["name"] == "Alpha" and body["trained_words"] == ["w1", "w2"]
    assert body["files"][0]["name"] == sf.name and [m["source_file_id"] for m in body["my_local_files"]] == [sf.pk]
    resp = alice.get("/api/v1/versions/999999/")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicates_groups_my_copies(alice, user):
    a = local_file(user, "a.safetensors", data=b"same", format="safetensors")
    b = local_file(user, "b.ckpt", data=b"same", format="torch-zip")
    local_file(user, "c.safetensors", data=b"different")
    resp = alice.get("/api/v1/duplicates/", {"prefer": "fp16"})
    assert resp.status_code == 200
    body = resp.json()
    [group] = body["results"]
    assert group["keep_id"] == a.pk and sorted(m["id"] for m in group["members"]) == sorted([a.pk, b.pk])
    assert group["reclaimable_bytes"] == group["lossless_bytes"] == len(b"same") == body["lossless_bytes"]
    assert {m["id"]: m["match"] for m in group["members"]}[b.pk] == "exact copy"


def test_duplicates_come_in_pages_with_totals_over_all_pages(alice, user):
    for i in range(3):
        local_file(user, f"{i}.safetensors", data=f"same-{i}".encode(), format="safetensors")
        local_file(user, f"{i}-copy.safetensors", data=f"same-{i}".encode(), format="safetensors")
    first = alice.get("/api/v1/duplicates/", {"page_size": 2}).json()
    assert (first["count"], len(first["results"]), first["previous"]) == (3, 2, None)
    assert first["lossless_bytes"] == sum(len(f"same-{i}") for i in range(3))
    second = alice.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    ids = {g["keep_id"] for g in first["results"] + second["results"]}
    assert len(ids) == 3
    resp = alice.get("/api/v1/duplicates/", {"page": 9})
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


def test_duplicates_bad_prefer_is_400_and_all_is_staff_only(alice):
    resp = alice.get("/api/v1/duplicates/", {"prefer": "int4"})
    assert resp.status_code == 400 and "prefer" in error_of(resp)["detail"]
    resp = alice.get("/api/v1/duplicates/", {"all": "1"})
    assert resp.status_code == 403 and error_of(resp)["code"] == "permission_denied"


# --- jobs -------------------------------------------------------------------------------------


def test_hf_index_job_is_created_and_listed(alice, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = alice.post("/api/v1/jobs/hf-index/", {"repo_id": "org/model-x", "repo_type": "model"}, format="json")
    assert resp.status_code == 202, resp.content
    job = Job.objects.get(pk=resp.json()["id"])
    assert job.owner == user and job.kind == "hf_index" and job.params == {"repo_id": "org/model-x", "revision": None, "repo_type": "model"}
    assert len(callbacks) == 1  # the task is queued once the row is committed
    assert [j["id"] for j in results(alice.get("/api/v1/jobs/"))] == [job.pk]
    assert alice.get(f"/api/v1/jobs/{job.pk}/").json()["status"] == "queued"
    assert alice.get("/api/v1/jobs/", {"kind": "hf_verify"}).json()["results"] == []


@pytest.mark.parametrize("body", [{}, {"repo_id": "../etc"}, {"repo_id": "a/b/c"}, {"repo_id": "o/m", "repo_type": "zip"},
                                  {"repo_id": "o/m", "revision": "two words"}])
def test_hf_index_bad_input_is_400(alice, body):
    resp = alice.post("/api/v1/jobs/hf-index/", body, format="json")
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_input"
    assert not Job.objects.exists()


def test_hf_verify_job_inside_the_roots(alice, user, model_root):
    folder = model_root / "download"
    folder.mkdir()
    resp = alice.post("/api/v1/jobs/hf-verify/", {"repo_id": "org/m", "local_dir": str(folder), "revision": "main"},
                      format="json")
    assert resp.status_code == 202, resp.content
    job = Job.objects.get(pk=resp.json()["id"])
    assert job.kind == "hf_verify" and job.params["local_dir"] == str(folder.resolve()) and job.params["revision"] == "main"


def test_hf_verify_outside_the_roots_is_400_with_the_reason(alice, model_root, tmp_path):
    resp = alice.post("/api/v1/jobs/hf-verify/", {"repo_id": "org/m", "local_dir": str(tmp_path)}, format="json")
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "path_refused" and "outside the model roots" in err["message"]
    missing = model_root / "nope"
    err = error_of(alice.post("/api/v1/jobs/hf-verify/", {"repo_id": "org/m", "local_dir": str(missing)}, format="json"))
    assert err["code"] == "path_refused" and "no such file" in err["message"]
    assert not Job.objects.exists()


def test_missing_job_is_404(alice):
    resp = alice.get("/api/v1/jobs/424242/")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


def test_drf_tokens_made_before_hashing_keep_working_and_leave_no_clear_text(user):
    """Migration 0009 hashes DRF authtoken's clear-text keys into ApiToken and empties the old table."""
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("models_catalog.migrations.0009_hashed_api_tokens")
    old_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # DRF's format: 40 hex characters
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created datetime, user_id integer)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, "2024-05-01 12:00:00", user.pk])
    migration.hash_drf_tokens(apps, SimpleNamespace(connection=connection))
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone() == (0,)
        cursor.execute("DROP TABLE authtoken_token")
    token = ApiToken.objects.get(user=user)
    assert (token.prefix, token.created_at.year) == (old_key[:8], 2024)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {old_key}")
    assert client.get("/api/v1/files/").status_code == 200


def _infotext(model_autov2: str, lora_addnet: str) -> str:
    return (f"a castle, <lora:moon:0.7>\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1, "
            f"Model hash: {model_autov2}, Model: dream, Lora hashes: \"moon: {lora_addnet}\", Version: v1.7.0")


@pytest.mark.parametrize("text", [
    "sha256:{sha}", "{SHA}", "AutoV2:{autov2}", "{autov2}", "{infotext}",
])
def test_api_searches_accept_what_the_catalog_page_accepts(alice, user, text):
    """One parser (workers.hash_query.parse_hash_query) behind the catalog page, GET /models/?search=,
    GET /files/?search= and the lookup: a prefixed hash, a bare one of any length, or a pasted infotext."""
    from django.test import Client

    sf = catalog_file("Dream Shaper", data=b"dream")
    other = catalog_file("Unrelated", data=b"other")
    lf = local_file(user, "dream-local.safetensors", data=b"dream")
    match(lf, sf)
    h = hashes_of(b"dream")
    q = text.format(sha=h["sha256"], SHA=h["sha256"].upper(), autov2=h["autov2"],
                    infotext=_infotext(h["autov2"], hashes_of(b"nothing")["autov2"] + "ab"))
    assert parse_hash_query(q)  # the page's parser reads it
    web = Client()
    web.force_login(user)
    page_ = web.get("/catalog/", {"q": q, "scope": "all"})
    assert page_.status_code == 200 and "Dream Shaper" in page_.content.decode()
    assert "Unrelated" not in page_.content.decode() and other.pk
    models = alice.get("/api/v1/models/", {"search": q})
    assert models.status_code == 200 and [m["name"] for m in models.json()["results"]] == ["Dream Shaper"]
    files = alice.get("/api/v1/files/", {"search": q})
    assert files.status_code == 200 and [f["id"] for f in files.json()["results"]] == [lf.pk]
    lookup = alice.get("/api/v1/lookup/", {"q": q})
    assert lookup.status_code == 200
    assert any(m["model"] == "Dream Shaper" for r in lookup.json() for m in r["matches"])
