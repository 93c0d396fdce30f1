"""Alice never sees Bob's paths, names or jobs on any page; the shared catalog stays visible."""
import hashlib
import re

import pytest
from django.contrib.auth import get_user_model

from models_catalog.models import Job, LocalFile, Match
from tests.factories import fp, login, page, seed_local, seed_model  # noqa: F401

pytestmark = pytest.mark.django_db

BOB_NAME = "bobs-secret-name.safetensors"


@pytest.fixture
def world(user, other_user):
    """Bob holds a file of a shared model, a converted copy of it, and a job; Alice holds one converted copy."""
    model, _, (sf,) = seed_model("Shared Model", files=[{"name": "shared.safetensors", "data": b"shared"}])
    bob_file = seed_local(other_user, BOB_NAME, data=b"shared", fingerprint=fp("F16", content="C", precision="P"))
    bob_dup = seed_local(other_user, "bobs-dup.safetensors", data=b"shared")
    Match.objects.create(local_file=bob_file, source_file=sf, kind="renamed",
                         evidence=f"SHA256 equal to shared.safetensors (here named {BOB_NAME})")
    # Alice's file was identified through Bob's (the matching service looks across owners).
    alice_file = seed_local(user, "alice.ckpt", data=b"alice", fmt="torch-zip", fingerprint=fp("F16", content="C", precision="P"))
    Match.objects.create(local_file=alice_file, source_file=sf, kind="converted", via=bob_file,
                         evidence=f"same tensors as {BOB_NAME} (safetensors), here as torch-zip, which is shared.safetensors")
    bob_only_model, _, (bob_only_sf,) = seed_model("Bob Only Model", files=[{"name": "bo.safetensors", "data": b"bo"}])
    Match.objects.create(local_file=bob_dup, source_file=bob_only_sf, kind="exact", evidence="SHA256 equal")
    job = Job.objects.create(owner=other_user, kind="hf_verify", status="running",
                             params={"repo_id": "bob/private-repo", "local_dir": "/m/bob/dir"})
    return {"model": model, "bob_file": bob_file, "bob_dup": bob_dup, "alice_file": alice_file, "job": job,
            "bob_only_model": bob_only_model}


def _no_bob(html_: str) -> None:
    for secret in (BOB_NAME, "/m/bob/", "bobs-dup", "bob/private-repo"):
        assert secret not in html_


@pytest.mark.parametrize("method,url", [
    ("get", "/files/{bob_file}/"), ("post", "/files/{bob_file}/forget/"), ("get", "/jobs/{job}/"),
    ("get", "/files/{bob_file}/convert/"), ("post", "/files/{bob_file}/link/"), ("get", "/files/{bob_file}/preview.webp"),
    ("get", "/actions/jobs/{job}/"),
])
def test_bobs_objects_are_404_for_alice(user, world, method, url):
    assert login(user).get(f"/files/{world['alice_file'].pk}/").status_code == 200  # her own opens: the 404 is Bob's
    alice = login(user)
    url = url.format(bob_file=world["bob_file"].pk, job=world["job"].pk)
    assert getattr(alice, method)(url).status_code == 404
    assert alice.get(url, HTTP_HX_REQUEST="true").status_code in (404, 405)
    assert LocalFile.objects.filter(pk=world["bob_file"].pk).exists()


def test_lists_show_only_alices_things(user, world):
    alice = login(user)
    for url in ("/", "/hf/", "/duplicates/", "/duplicates/export.csv", "/duplicates/export.json", "/catalog/"):
        resp = alice.get(url)
        assert resp.status_code == 200, url  # an error page would pass the absence checks below
        _no_bob(resp.getvalue().decode())
    # ... and the lists do show Alice's own things (an empty page would pass too).
    assert "alice.ckpt" in alice.get("/").content.decode()
    assert "Shared Model" in alice.get("/catalog/").content.decode()


def test_catalog_mine_counts_only_alices_copies(user, world):
    alice = login(user)
    html_ = page(alice, "/catalog/")
    assert "Shared Model" in html_ and "Bob Only Model" not in html_
    assert '<td class="num">1</td>' in html_
    # The shared catalog still lists it, without Bob's copies.
    everything = page(alice, "/catalog/", scope="all")
    assert "Bob Only Model" in everything and '<td class="num">0</td>' in everything


def test_model_page_hides_bobs_files_and_evidence_naming_them(user, world):
    alice = login(user)
    html_ = page(alice, f"/models/{world['model'].pk}/")
    _no_bob(html_)
    assert f'href="/files/{world["alice_file"].pk}/"' in html_ and "details hidden" in html_
    _no_bob(page(alice, f"/models/{world['bob_only_model'].pk}/"))


def test_file_page_hides_evidence_that_names_bobs_file(user, world):
    html_ = page(login(user), f"/files/{world['alice_file'].pk}/")
    _no_bob(html_)
    assert "same weights, other container" in html_ and "details hidden" in html_


def test_lookup_and_hash_search_do_not_reveal_bobs_files(user, world):
    alice = login(user)
    bob_hash = hashlib.sha256(b"shared").hexdigest()
    html_ = page(alice, "/lookup/", q=bob_hash)
    _no_bob(html_)
    assert "Shared Model" in html_  # the shared catalog answers
    _no_bob(page(alice, "/catalog/", q=bob_hash, scope="all"))


def test_bobs_own_view_still_shows_his_evidence(other_user, world):
    html_ = page(login(other_user), f"/files/{world['bob_file'].pk}/")
    assert BOB_NAME in html_


def test_staff_may_open_other_users_files(world):
    staff = get_user_model().objects.create_user("root", password="x", is_staff=True)
    html_ = page(login(staff), f"/files/{world['bob_file'].pk}/")
    assert BOB_NAME in html_ and "Owner" in html_


def test_every_page_requires_login(client, world):
    for url in ("/catalog/", f"/models/{world['model'].pk}/", "/lookup/", "/duplicates/", "/duplicates/export.csv",
                "/hf/", f"/jobs/{world['job'].pk}/", "/tokens/"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/"), url


# --- every page route -------------------------------------------------------------
# (url, what Alice must see there): each is opened by Alice (200, her marker, nothing of Bob's).
READ_PAGES = {
    "file_list": [("/", "alice.ckpt"), ("/?scope=all", "alice.ckpt"), ("/?search=bobs", "None of your files"),
                  (f"/?search={hashlib.sha256(b'shared').hexdigest()}", "None of your files")],
    "file_detail": [("/files/{alice_file}/", "alice.ckpt")],
    "catalog": [("/catalog/", "Shared Model"), ("/catalog/?scope=all", "Bob Only Model"),
                (f"/catalog/?scope=all&q={hashlib.sha256(b'shared').hexdigest()}", "Shared Model")],
    "model_detail": [("/models/{model}/", "alice.ckpt"), ("/models/{bob_only_model}/", "Bob Only Model")],
    "lookup": [(f"/lookup/?q={hashlib.sha256(b'shared').hexdigest()}", "Shared Model"),
               (f"/lookup/?q={hashlib.sha256(b'alice').hexdigest()}", "alice.ckpt")],
    "duplicates": [("/duplicates/", "Duplicates")],
    "duplicates_csv": [("/duplicates/export.csv", "group,model,keep")],
    "duplicates_json": [("/duplicates/export.json", "\"groups\"")],
    "quarantine": [("/quarantine/", "Quarantine")],
    "hf": [("/hf/", "Hugging Face")],
}
# Routes that are 404 for another user's object (test_bobs_objects_are_404_for_alice) or show no local
# file at all; a new route must be added to one of these or to READ_PAGES.
NOT_LISTING = {
    "file_forget", "file_convert", "file_link", "file_preview", "job_detail", "action_job",  # Bob's: 404
    "export_sidecars", "duplicate_action", "quarantine_action", "hf_index", "hf_verify",  # POST: own files only
    "upload", "register", "tokens", "settings",  # forms: no file list
    "preview_image", "preview_placeholder",  # the shared catalog's images
}
# Staff see everyone's files, each labelled with its owner.
STAFF_PAGES = [("/?scope=all", BOB_NAME), ("/files/{bob_file}/", BOB_NAME), ("/models/{model}/", BOB_NAME),
               (f"/lookup/?q={hashlib.sha256(b'shared').hexdigest()}", BOB_NAME)]


def _url(template: str, world) -> str:
    return template.format(**{k: v.pk for k, v in world.items()})


def test_every_page_route_has_a_privacy_test():
    from models_catalog.urls import urlpatterns

    names = {p.name for p in urlpatterns}
    assert names - set(READ_PAGES) - NOT_LISTING == set(), "a new page: add it to READ_PAGES or NOT_LISTING"
    assert (set(READ_PAGES) | NOT_LISTING) - names == set()


@pytest.mark.parametrize("name,url,marker", [(n, u, m) for n, routes in READ_PAGES.items() for u, m in routes])
def test_no_page_shows_bobs_files_to_alice(user, world, name, url, marker):
    resp = login(user).get(_url(url, world))
    assert resp.status_code == 200, url
    text = (b"".join(resp.streaming_content) if resp.streaming else resp.content).decode()  # exports stream
    _no_bob(text)
    assert marker in text, (url, marker)  # the page shows Alice her own things (an empty page would pass)


@pytest.mark.parametrize("url,marker", STAFF_PAGES)
def test_staff_see_everyones_files_labelled_with_the_owner(world, url, marker):
    staff = get_user_model().objects.create_user("root", password="x", is_staff=True)
    text = page(login(staff), _url(url, world))
    assert marker in text and re.search(r"owner: bob|<dt>Owner</dt>\s*<dd>bob</dd>", text), url


def test_staff_my_files_shows_their_own_by_default(world):
    staff = get_user_model().objects.create_user("root", password="x", is_staff=True)
    seed_local(staff, "staff-own.safetensors", data=b"staff")
    text = page(login(staff), "/")
    assert "staff-own.safetensors" in text and BOB_NAME not in text
