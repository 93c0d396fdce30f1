"""Uploading bytes you already have stores nothing new and points to your file; only your own files count."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services import upload as upload_service
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.upload import local_file_upload
from tests.model_builders import write_safetensors
from tests.factories import token_client  # noqa: F401
from tests.factories import login  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def weights(model_root) -> bytes:
    return write_safetensors(model_root / "src.safetensors", payload=b"\x09" * 4096).read_bytes()


def stored(model_root) -> list[Path]:
    return sorted((model_root.parent / "data" / "uploads").rglob("*"))


def api_upload(user, name: str, data: bytes):
    return token_client(user).post("/api/v1/files/upload/", {"file": SimpleUploadedFile(name, data)}, format="multipart")


def uploaded_and_hashed(user, name: str, data: bytes) -> LocalFile:
    resp = api_upload(user, name, data)
    assert resp.status_code == 201 and resp.json()["already_had"] is False, resp.content
    local_file_hash(local_file_id=resp.json()["id"])  # on_commit never runs in a test transaction: hash it here
    lf = LocalFile.objects.get(pk=resp.json()["id"])
    assert lf.status == "done" and lf.hashes.sha256 == hashlib.sha256(data).hexdigest()
    return lf


def test_api_reupload_of_the_same_bytes_stores_nothing_and_answers_the_existing_file(user, model_root, weights):
    first = uploaded_and_hashed(user, "style-v1.safetensors", weights)
    before = stored(model_root)
    resp = api_upload(user, "renamed-copy.safetensors", weights)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["already_had"] is True and body["id"] == first.pk and body["name"] == "style-v1.safetensors"
    assert body["hashes"]["civitai"]["SHA256"] == hashlib.sha256(weights).hexdigest().upper()
    assert LocalFile.objects.count() == 1 and stored(model_root) == before


def test_web_reupload_redirects_to_the_existing_file_and_says_so(user, model_root, weights):
    first = uploaded_and_hashed(user, "style-v1.safetensors", weights)
    before = stored(model_root)
    browser = login(user)
    resp = browser.post("/upload/", {"file": SimpleUploadedFile("again.safetensors", weights)})
    assert resp.status_code == 302 and resp["Location"] == f"/files/{first.pk}/"
    html = browser.get(resp["Location"]).content.decode()
    assert "You already have this file (style-v1.safetensors): nothing new was stored." in html
    # The upload page's script asks for JSON: 200 (not 201) and the existing file's page to go to.
    resp = browser.post("/upload/", {"file": SimpleUploadedFile("again.safetensors", weights)},
                        HTTP_ACCEPT="application/json")
    assert resp.status_code == 200 and resp.json() == {"id": first.pk, "name": "style-v1.safetensors",
                                                       "url": f"/files/{first.pk}/", "already_had": True}
    assert LocalFile.objects.count() == 1 and stored(model_root) == before


def test_another_users_identical_file_is_stored_normally_and_never_revealed(user, other_user, model_root, weights):
    alices = uploaded_and_hashed(user, "alice-private-mix.safetensors", weights)
    resp = api_upload(other_user, "bobs.safetensors", weights)
    assert resp.status_code == 201 and resp.json()["already_had"] is False
    bobs = LocalFile.objects.get(pk=resp.json()["id"])
    assert bobs.owner == other_user and bobs.path != alices.path and Path(bobs.path).read_bytes() == weights
    assert b"alice-private-mix" not in resp.content and alices.path.encode() not in resp.content
    resp = login(other_user).post("/upload/", {"file": SimpleUploadedFile("b2.safetensors", weights)}, follow=True)
    assert b"already have" not in resp.content and b"alice-private-mix" not in resp.content


def test_staff_seeing_everyones_files_still_counts_only_their_own(user, model_root, weights):
    uploaded_and_hashed(user, "alice.safetensors", weights)
    staff = get_user_model().objects.create_user("root", password="pw-root-123", is_staff=True)
    resp = api_upload(staff, "staff.safetensors", weights)
    assert resp.status_code == 201 and resp.json()["already_had"] is False
    assert LocalFile.objects.filter(owner=staff).count() == 1


def test_a_registered_file_with_the_same_bytes_counts_too(user, model_root, weights):
    mine = LocalFile.objects.create(owner=user, origin="registered", path=str(model_root / "src.safetensors"),
                                    name="src.safetensors", status="done")
    FileHashes.objects.create(local_file=mine, size=len(weights), sha256=hashlib.sha256(weights).hexdigest())
    resp = api_upload(user, "up.safetensors", weights)
    assert resp.status_code == 200 and resp.json()["id"] == mine.pk and stored(model_root) == []


def test_a_copy_still_being_hashed_does_not_count(user, model_root, weights):
    # Its SHA256 may be from before the file changed: only a finished file says what its bytes are.
    mine = LocalFile.objects.create(owner=user, origin="registered", path=str(model_root / "src.safetensors"),
                                    name="src.safetensors", status="hashing")
    FileHashes.objects.create(local_file=mine, size=len(weights), sha256=hashlib.sha256(weights).hexdigest())
    resp = api_upload(user, "up.safetensors", weights)
    assert resp.status_code == 201 and resp.json()["already_had"] is False and LocalFile.objects.count() == 2


def test_the_streamed_sha256_spares_a_second_read(user, model_root, weights, monkeypatch):
    uploaded_and_hashed(user, "first.safetensors", weights)

    def read_again():
        raise AssertionError("the upload was hashed again after streaming")

    monkeypatch.setattr(upload_service, "hashlib", SimpleNamespace(sha256=read_again))
    assert api_upload(user, "again.safetensors", weights).status_code == 200


def test_an_upload_kept_in_memory_is_hashed_from_its_bytes(user, model_root, weights, monkeypatch):
    monkeypatch.setattr(upload_service, "enqueue_hashing", lambda _id: None)
    first = uploaded_and_hashed(user, "first.safetensors", weights)
    result = local_file_upload(uploaded=SimpleUploadedFile("mem.safetensors", weights), owner=user)
    assert result.already_had and result.local_file.pk == first.pk and LocalFile.objects.count() == 1


def test_a_recognised_temp_file_is_deleted_at_once(user, model_root, weights):
    first = uploaded_and_hashed(user, "first.safetensors", weights)
    temp = TemporaryUploadedFile("t.safetensors", "application/octet-stream", len(weights), None)
    temp.write(weights)
    temp.seek(0)
    temp.streamed_sha256 = hashlib.sha256(weights).hexdigest()
    path = temp.temporary_file_path()
    result = local_file_upload(uploaded=temp, owner=user)
    assert result.already_had and result.local_file.pk == first.pk and not os.path.exists(path)
