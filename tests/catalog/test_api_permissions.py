"""Who may see what through the REST API: nothing of user B reaches user A by any route."""
from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from models_catalog.models import Job, LocalFile, QuarantineEntry
from tests.factories import catalog_file, error_of, local_file, match, token_client  # noqa: F401

pytestmark = pytest.mark.django_db

SECRET = b"bob's private weights"

ENDPOINTS = [
    ("get", "/api/v1/lookup/?q=0123456789"), ("post", "/api/v1/lookup/"),
    ("get", "/api/v1/files/"), ("get", "/api/v1/files/1/"), ("delete", "/api/v1/files/1/"),
    ("post", "/api/v1/files/upload/"), ("post", "/api/v1/files/register/"), ("post", "/api/v1/files/push/"),
    ("get", "/api/v1/models/"), ("get", "/api/v1/models/1/"), ("get", "/api/v1/versions/1/"),
    ("get", "/api/v1/duplicates/"), ("get", "/api/v1/jobs/"), ("get", "/api/v1/jobs/1/"),
    ("post", "/api/v1/jobs/hf-index/"), ("post", "/api/v1/jobs/hf-verify/"),
    ("post", "/api/v1/duplicates/actions/"), ("get", "/api/v1/quarantine/"),
    ("post", "/api/v1/quarantine/restore/"), ("post", "/api/v1/quarantine/purge/"),
]


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_every_endpoint_needs_credentials(method, url):
    resp = getattr(APIClient(), method)(url, {}, format="json") if method == "post" else getattr(APIClient(), method)(url)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "not_authenticated" and resp["WWW-Authenticate"] == "Token"


@pytest.fixture
def world(user, other_user):
    """Alice and Bob each have files, a job and matches to the same catalog model; Bob's are private."""
    sf = catalog_file("Shared Model", data=SECRET)
    bob_file = local_file(other_user, "bob-secret-name.safetensors", data=SECRET, format="safetensors")
    bob_copy = local_file(other_user, "bob-second-copy.ckpt", data=SECRET, format="torch-zip")
    match(bob_file, sf)
    match(bob_copy, sf, kind="renamed")
    alice_file = local_file(user, "alice-converted.ckpt", data=b"alice bytes", format="torch-zip")
    # A match derived from Bob's identified copy: the matcher names that copy in its evidence.
    match(alice_file, sf, kind="converted", via=bob_file,
          evidence="same tensors as bob-secret-name.safetensors (safetensors), here as torch-zip, which is Shared Model.safetensors")
    bob_job = Job.objects.create(owner=other_user, kind="hf_verify", params={"local_dir": "/models/bob/private"})
    return {"sf": sf, "bob_file": bob_file, "bob_copy": bob_copy, "alice_file": alice_file, "bob_job": bob_job}


@pytest.fixture
def bob_entry(other_user):
    """A file of Bob's in quarantine."""
    from django.utils import timezone

    lf = local_file(other_user, "bob-quarantined.safetensors", data=SECRET, quarantined_at=timezone.now())
    return QuarantineEntry.objects.create(owner=other_user, local_file=lf, size=len(SECRET), quarantine_path=lf.path,
                                          original_path="/models/bob/bob-quarantined.safetensors")


def _text(resp) -> str:
    return resp.content.decode()


# Every route that reads something back, with what Alice must see there (her own file, or the shared
# catalog): a 200 that shows nothing would pass the absence checks alone.
READ_ROUTES = [
    ("/api/v1/files/", "alice-converted.ckpt"),
    ("/api/v1/files/?scope=all", "alice-converted.ckpt"),
    ("/api/v1/files/?search=bob", '"results":[]'),
    (f"/api/v1/files/?search={hashlib.sha256(SECRET).hexdigest()}", '"results":[]'),
    ("/api/v1/files/{alice_file}/", "alice-converted.ckpt"),
    (f"/api/v1/lookup/?q={hashlib.sha256(SECRET).hexdigest()}", "Shared Model"),
    ("/api/v1/duplicates/", '"count":0'),
    ("/api/v1/models/", "Shared Model"),
    ("/api/v1/models/{model}/", "alice-converted.ckpt"),
    ("/api/v1/versions/{version}/", "alice-converted.ckpt"),
    ("/api/v1/jobs/", '"results":[]'),
    ("/api/v1/quarantine/", '"results":[]'),
]
# Routes that take another user's object only to answer 404 (tests below), or list no local file;
# a new route must be added here or to READ_ROUTES.
NOT_LISTING = {"auth-token", "file-upload", "file-register", "file-push", "file-convert", "file-link", "job-hf-index",
               "job-hf-verify", "job-detail", "duplicate-actions", "quarantine-restore", "quarantine-purge"}
READ_NAMES = {"lookup", "file-list", "file-detail", "model-list", "model-detail", "version-detail", "duplicates",
              "job-list", "quarantine-list"}


def test_every_api_route_has_a_privacy_test():
    from django.urls import resolve

    from models_catalog.api_urls import v1

    names = {p.name for p in v1}
    assert names - READ_NAMES - NOT_LISTING == set(), "a new endpoint: add it to READ_ROUTES or NOT_LISTING"
    assert (READ_NAMES | NOT_LISTING) - names == set()
    routed = {resolve(r.split("?")[0].format(alice_file=1, model=1, version=1)).url_name for r, _ in READ_ROUTES}
    assert routed == READ_NAMES


@pytest.mark.parametrize("route,marker", READ_ROUTES)
def test_no_route_shows_another_users_files_paths_or_jobs(user, world, route, marker):
    url = route.format(alice_file=world["alice_file"].pk, model=world["sf"].version.model_id, version=world["sf"].version_id)
    resp = token_client(user).get(url)
    assert resp.status_code == 200, resp.content
    text = _text(resp)
    for secret in ("bob-secret-name", "bob-second-copy", "/models/bob", str(world["bob_job"].params["local_dir"])):
        assert secret not in text, (url, secret)
    assert f'"local_file_id":{world["bob_file"].pk}' not in text.replace(" ", "")
    assert f'"via_local_file_id":{world["bob_file"].pk}' not in text.replace(" ", "")
    assert marker in text.replace(" ", "") if marker.startswith('"') else marker in text, (url, marker)


@pytest.mark.parametrize("route", [
    "/api/v1/files/?scope=all", "/api/v1/files/{bob_file}/", "/api/v1/models/{model}/", "/api/v1/versions/{version}/",
    f"/api/v1/lookup/?q={hashlib.sha256(SECRET).hexdigest()}",
])
def test_staff_see_everyones_files_with_their_owner(world, route):
    staff = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    url = route.format(bob_file=world["bob_file"].pk, model=world["sf"].version.model_id, version=world["sf"].version_id)
    resp = token_client(staff).get(url)
    assert resp.status_code == 200, resp.content
    text = _text(resp).replace(" ", "")
    assert "bob-secret-name.safetensors" in text and '"owner":"bob"' in text, url
    assert '"owner":"carol"' not in text  # one's own rows carry an empty owner


@pytest.mark.parametrize("route", ["/api/v1/files/{bob_file}/", "/api/v1/jobs/{bob_job}/"])
def test_another_users_object_is_404_not_403(user, world, route):
    resp = token_client(user).get(route.format(bob_file=world["bob_file"].pk, bob_job=world["bob_job"].pk))
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


@pytest.mark.parametrize("url,body", [
    ("/api/v1/duplicates/actions/", {"action": "quarantine", "file_ids": ["{bob_file}"]}),
    ("/api/v1/duplicates/actions/", {"action": "hardlink", "keeper_id": "{bob_file}", "file_ids": ["{bob_copy}"]}),
    ("/api/v1/duplicates/actions/", {"action": "hardlink", "group": "{bob_file}", "dry_run": True}),
    ("/api/v1/quarantine/restore/", {"entry_ids": ["{bob_entry}"]}),
    ("/api/v1/quarantine/purge/", {"entry_ids": ["{bob_entry}"], "dry_run": True}),
])
def test_actions_on_another_users_files_are_404_and_start_nothing(user, world, bob_entry, url, body):
    ids = {"{bob_file}": world["bob_file"].pk, "{bob_copy}": world["bob_copy"].pk, "{bob_entry}": bob_entry.pk}
    body = {k: [ids[x] for x in v] if isinstance(v, list) else ids.get(v, v) for k, v in body.items()}
    resp = token_client(user).post(url, body, format="json")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    assert "bob-" not in resp.content.decode()
    assert not Job.objects.filter(owner=user).exists() and QuarantineEntry.objects.filter(pk=bob_entry.pk).exists()


def test_no_route_lists_another_users_quarantine(user, bob_entry):
    assert token_client(user).get("/api/v1/quarantine/").json()["results"] == []


def test_another_users_file_cannot_be_deleted(user, world):
    resp = token_client(user).delete(f"/api/v1/files/{world['bob_file'].pk}/")
    assert resp.status_code == 404 and LocalFile.objects.filter(pk=world["bob_file"].pk).exists()


def test_catalog_counts_only_my_copies(user, other_user, world):
    model_id = world["sf"].version.model_id
    mine = token_client(user).get(f"/api/v1/models/{model_id}/").json()
    theirs = token_client(other_user).get(f"/api/v1/models/{model_id}/").json()
    assert mine["local_copies"] == 1 and [m["local_file_id"] for m in mine["my_local_files"]] == [world["alice_file"].pk]
    assert theirs["local_copies"] == 2
    assert sorted(m["local_file_id"] for m in theirs["my_local_files"]) == sorted([world["bob_file"].pk, world["bob_copy"].pk])
    listed = token_client(user).get("/api/v1/models/").json()["results"]
    assert [m["local_copies"] for m in listed] == [1]


def test_evidence_naming_another_users_copy_is_redacted_but_the_owner_sees_it(user, other_user, world):
    detail = token_client(user).get(f"/api/v1/files/{world['alice_file'].pk}/").json()
    [m] = detail["matches"]
    assert m["via_local_file_id"] is None and "another user's copy" in m["evidence"] and "Shared Model" in m["evidence"]
    # When the copy it came through is Alice's own, she sees its name and id.
    own = local_file(user, "alice-original.safetensors", data=SECRET)
    world["alice_file"].matches.update(via=own, evidence="same tensors as alice-original.safetensors, which is X")
    [m] = token_client(user).get(f"/api/v1/files/{world['alice_file'].pk}/").json()["matches"]
    assert m["via_local_file_id"] == own.pk and "alice-original.safetensors" in m["evidence"]


def test_lookup_my_files_part_is_mine_only(user, other_user, world):
    q = hashlib.sha256(SECRET).hexdigest()
    bob_sees = token_client(other_user).get("/api/v1/lookup/", {"q": q}).json()[0]["matches"]
    alice_sees = token_client(user).get("/api/v1/lookup/", {"q": q}).json()[0]["matches"]
    assert {m["local_file_id"] for m in bob_sees if m["source"] == "my files"} == {world["bob_file"].pk, world["bob_copy"].pk}
    assert [m for m in alice_sees if m["source"] == "my files"] == []
    assert [m["source"] for m in alice_sees] == ["civitai"]  # the shared catalog answers everyone


def test_duplicates_are_per_user_and_staff_may_see_everyone(user, other_user, world):
    assert token_client(user).get("/api/v1/duplicates/").json()["results"] == []
    [group] = token_client(other_user).get("/api/v1/duplicates/").json()["results"]
    assert {m["id"] for m in group["members"]} == {world["bob_file"].pk, world["bob_copy"].pk}
    staff = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    assert len(token_client(staff).get("/api/v1/duplicates/", {"all": "true"}).json()["results"]) == 1
    assert token_client(staff).get("/api/v1/duplicates/").json()["results"] == []  # without all: staff's own


def test_staff_list_their_own_files_unless_they_ask_for_all_and_see_only_their_own_jobs(world):
    staff = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    client = token_client(staff)
    assert client.get("/api/v1/files/").json()["results"] == []  # like My files: their own by default
    assert len(client.get("/api/v1/files/", {"scope": "all"}).json()["results"]) == 3
    assert client.get(f"/api/v1/files/{world['bob_file'].pk}/").status_code == 200
    assert client.get(f"/api/v1/jobs/{world['bob_job'].pk}/").status_code == 404


def test_session_auth_requires_csrf_for_unsafe_methods(user, model_root):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/v1/files/").status_code == 200  # safe methods need no token
    for url, body in (("/api/v1/lookup/", {"text": "0123456789"}), ("/api/v1/jobs/hf-index/", {"repo_id": "o/m"})):
        resp = browser.post(url, body, format="json")
        assert resp.status_code == 403 and "CSRF" in error_of(resp)["message"]
    assert not Job.objects.exists()
    # The same request with a token (what scripts do) needs no CSRF token.
    script = token_client(user)
    script.handler.enforce_csrf_checks = True
    assert script.post("/api/v1/lookup/", {"text": "0123456789"}, format="json").status_code == 200


def test_session_auth_with_a_csrf_token_is_accepted(user):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/accounts/login/")  # sets the csrftoken cookie
    token = browser.cookies["csrftoken"].value
    resp = browser.post("/api/v1/lookup/", {"text": "0123456789"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 200


def test_upload_over_session_needs_csrf_too(user, model_root):
    from django.core.files.uploadedfile import SimpleUploadedFile

    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    resp = browser.post("/api/v1/files/upload/", {"file": SimpleUploadedFile("a.bin", b"abc")}, format="multipart")
    assert resp.status_code == 403 and not LocalFile.objects.exists()


def test_page_and_api_show_the_same_evidence_and_hide_all_of_it(user, world):
    """One privacy rule: the whole evidence text goes, not only the copy's name (here its old name and folder)."""
    from django.test import Client

    from models_catalog.identity import file_identities

    world["alice_file"].matches.update(evidence="same tensors as /models/bob/old-name.safetensors, which is X")
    [m] = token_client(user).get(f"/api/v1/files/{world['alice_file'].pk}/").json()["matches"]
    web = Client()
    web.force_login(user)
    page = web.get(f"/files/{world['alice_file'].pk}/")
    assert page.status_code == 200 and "alice-converted.ckpt" in page.content.decode()
    assert "/models/bob" not in m["evidence"] and "old-name" not in page.content.decode()
    assert m["evidence"] == file_identities([world["alice_file"]], viewer=user)[world["alice_file"].pk].evidence
    assert m["evidence"] in page.content.decode().replace("&#x27;", "'")


@pytest.mark.parametrize("route", ["/api/v1/files/{bob_file}/convert/", "/api/v1/files/{bob_file}/link/"])
def test_changing_another_users_file_is_404_for_staff_too(user, world, route):
    """Seeing is not changing: staff see Bob's file, but converting or linking it stays Bob's."""
    staff = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    for who in (user, staff):
        resp = token_client(who).post(route.format(bob_file=world["bob_file"].pk), {"dtype": "fp16"}, format="json")
        assert resp.status_code == 404 and error_of(resp)["code"] == "not_found", (who, resp.content)
    assert token_client(staff).get(f"/api/v1/files/{world['bob_file'].pk}/").status_code == 200
    assert list(Job.objects.all()) == [world["bob_job"]] and not world["bob_file"].matches.filter(kind="manual").exists()
