"""Forget: an upload's stored bytes are freed with its row; nothing else on disk is ever deleted."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import filesizeformat

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services import hashing as hashing_service
from models_catalog.services.forget import local_file_forget
from models_catalog.services.hashing import local_file_hash, local_files_hash
from tests.model_builders import write_safetensors
from tests.factories import token_client  # noqa: F401
from tests.factories import login  # noqa: F401

pytestmark = pytest.mark.django_db


def upload(user, name: str, data: bytes) -> LocalFile:
    """Upload through the API as `user` (its hashing stays queued: on_commit never runs in a test transaction)."""
    resp = token_client(user).post("/api/v1/files/upload/", {"file": SimpleUploadedFile(name, data)}, format="multipart")
    assert resp.status_code == 201, resp.content
    return LocalFile.objects.get(pk=resp.json()["id"])


def uploads(model_root) -> list[Path]:
    return sorted((model_root.parent / "data" / "uploads").rglob("*"))


def test_forgetting_an_upload_on_the_page_deletes_its_bytes_and_folder_and_says_how_many(user, model_root):
    data = write_safetensors(model_root / "x", payload=b"\x01" * 3000).read_bytes()
    lf = upload(user, "style.safetensors", data)
    assert Path(lf.path).exists()
    resp = login(user).post(f"/files/{lf.pk}/forget/", follow=True)
    html = resp.content.decode()
    assert resp.status_code == 200 and "its uploaded copy was deleted" in html and filesizeformat(len(data)) in html
    assert not LocalFile.objects.filter(pk=lf.pk).exists()
    assert not Path(lf.path).exists() and not Path(lf.path).parent.exists() and uploads(model_root) == []


def test_forgetting_an_upload_through_the_api_answers_the_freed_bytes(user, model_root):
    data = write_safetensors(model_root / "x", payload=b"\x02" * 500).read_bytes()
    lf = upload(user, "api.safetensors", data)
    resp = token_client(user).delete(f"/api/v1/files/{lf.pk}/")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["id"] == lf.pk and body["stored_copy"] == "deleted" and body["freed_bytes"] == len(data)
    assert "deleted" in body["message"] and uploads(model_root) == []
    assert token_client(user).delete(f"/api/v1/files/{lf.pk}/").status_code == 404


def test_forget_is_safe_when_the_bytes_are_already_gone_and_when_repeated(user, model_root):
    lf = upload(user, "gone.safetensors", b"w" * 64)
    os.unlink(lf.path)
    first = local_file_forget(local_file=lf)
    assert first.stored_copy == "already-gone" and first.freed_bytes == 0
    assert uploads(model_root) == []  # the emptied random folder went too
    again = local_file_forget(local_file=lf)  # a stale copy of a row already forgotten
    assert again.stored_copy == "already-gone" and not LocalFile.objects.exists()


def test_a_second_forget_of_a_row_already_gone_still_frees_its_bytes(user, model_root):
    """Two requests forgetting at once: whichever runs, the bytes end up freed once."""
    lf = upload(user, "race.safetensors", b"r" * 64)
    LocalFile.objects.filter(pk=lf.pk).delete()  # the other request deleted the row and died before freeing
    assert local_file_forget(local_file=lf).freed_bytes == 64 and uploads(model_root) == []


def test_forgetting_a_registered_file_never_deletes_it_even_inside_the_upload_folder(user, model_root):
    # Model roots may include the data dir: a file registered in place there is still the owner's file.
    folder = model_root.parent / "data" / "uploads" / ("a" * 32)
    folder.mkdir()
    on_disk = write_safetensors(folder / "mine.safetensors")
    lf = LocalFile.objects.create(owner=user, origin="registered", path=str(on_disk), name=on_disk.name, status="done")
    resp = token_client(user).delete(f"/api/v1/files/{lf.pk}/")
    assert resp.status_code == 200 and resp.json()["stored_copy"] == "not-stored" and resp.json()["freed_bytes"] == 0
    assert on_disk.exists() and not LocalFile.objects.exists()
    lf2 = LocalFile.objects.create(owner=user, origin="registered", path=str(on_disk), name=on_disk.name, status="done")
    html = login(user).post(f"/files/{lf2.pk}/forget/", follow=True).content.decode()
    assert "the file itself was not touched" in html and on_disk.exists()


def _tampered(kind: str, uploads_dir: Path, outside: Path) -> tuple[str, Path]:
    """An uploaded row's path that does not lead to an upload's own copy, and the file it leads to."""
    victim = outside / "victim.safetensors"
    if kind == "outside":
        return str(victim), victim
    if kind == "dot-dot":
        (uploads_dir / ("b" * 32)).mkdir()
        return str(uploads_dir / ("b" * 32) / ".." / ".." / ".." / outside.name / victim.name), victim
    if kind == "linked-folder":
        (uploads_dir / ("c" * 32)).symlink_to(outside, target_is_directory=True)
        return str(uploads_dir / ("c" * 32) / victim.name), victim
    if kind == "linked-file":
        (uploads_dir / ("d" * 32)).mkdir()
        (uploads_dir / ("d" * 32) / "m.safetensors").symlink_to(victim)
        return str(uploads_dir / ("d" * 32) / "m.safetensors"), victim
    if kind == "upload-root-itself":
        loose = uploads_dir / "loose.safetensors"
        write_safetensors(loose)
        return str(loose), loose
    if kind == "deeper":
        deep = uploads_dir / ("e" * 32) / "sub"
        deep.mkdir(parents=True)
        write_safetensors(deep / "m.safetensors")
        return str(deep / "m.safetensors"), deep / "m.safetensors"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["outside", "dot-dot", "linked-folder", "linked-file", "upload-root-itself", "deeper"])
def test_a_tampered_upload_row_never_leads_a_delete_outside_an_upload_folder(user, model_root, tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_safetensors(outside / "victim.safetensors")
    path, victim = _tampered(kind, model_root.parent / "data" / "uploads", outside)
    before = uploads(model_root)
    lf = LocalFile.objects.create(owner=user, origin="uploaded", path=path, name="m.safetensors", status="done")
    resp = token_client(user).delete(f"/api/v1/files/{lf.pk}/")
    assert resp.status_code == 200 and resp.json()["stored_copy"] == "left-alone" and resp.json()["freed_bytes"] == 0
    assert victim.exists() and (outside / "victim.safetensors").exists() and uploads(model_root) == before
    assert not LocalFile.objects.exists()


def test_forget_keeps_the_bytes_while_another_row_uses_the_path(user, other_user, model_root):
    lf = upload(user, "shared.safetensors", b"s" * 128)
    # The same path registered in place by someone else (model roots that include the data dir).
    other = LocalFile.objects.create(owner=other_user, origin="registered", path=lf.path, name=lf.name, status="done")
    forgotten = local_file_forget(local_file=lf)
    assert forgotten.stored_copy == "in-use" and forgotten.freed_bytes == 0 and Path(lf.path).exists()
    assert local_file_forget(local_file=other).stored_copy == "not-stored" and Path(lf.path).exists()


def test_a_pushed_row_naming_the_same_path_does_not_keep_the_bytes(user, other_user, model_root):
    lf = upload(user, "p.safetensors", b"p" * 128)
    LocalFile.objects.create(owner=other_user, origin="pushed", host="elsewhere", path=lf.path, name=lf.name, status="done")
    assert local_file_forget(local_file=lf).stored_copy == "deleted" and not Path(lf.path).exists()


# --- forgotten while its hashing stage runs: the worker neither crashes nor brings the row back -----


def _hashed_after(monkeypatch, before_read=None, after_read=None):
    real = hashing_service.hash_file_cached_with_identity

    def hash_with_a_forget(path, **kwargs):
        if before_read:
            before_read()
        result = real(path, **kwargs)
        if after_read:
            after_read()
        return result

    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", hash_with_a_forget)


@pytest.mark.parametrize("when", ["before_read", "after_read"])
def test_an_upload_forgotten_mid_hash_is_not_resurrected(user, model_root, monkeypatch, when):
    lf = upload(user, "mid.safetensors", write_safetensors(model_root / "x").read_bytes())
    _hashed_after(monkeypatch, **{when: lambda: local_file_forget(local_file=lf)})
    local_file_hash(local_file_id=lf.pk)  # nothing raised
    assert not LocalFile.objects.exists() and not FileHashes.objects.exists() and uploads(model_root) == []


def test_a_chunk_skips_a_file_forgotten_before_its_turn(user, model_root):
    gone = upload(user, "gone.safetensors", write_safetensors(model_root / "x", payload=b"\x03" * 16).read_bytes())
    kept = upload(user, "kept.safetensors", write_safetensors(model_root / "y", payload=b"\x04" * 16).read_bytes())
    local_file_forget(local_file=gone)
    local_files_hash(local_file_ids=[gone.pk, kept.pk])
    assert list(LocalFile.objects.values_list("pk", "status")) == [(kept.pk, "done")]


def test_an_upload_forgotten_while_its_tensors_are_read_is_not_resurrected(user, model_root, monkeypatch):
    from models_catalog.services import analysis as analysis_service

    lf = upload(user, "reading.safetensors", write_safetensors(model_root / "x").read_bytes())
    real = analysis_service.analyse_path

    def analyse_with_a_forget(path, **kwargs):
        local_file_forget(local_file=lf)
        return real(path, **kwargs)

    monkeypatch.setattr(analysis_service, "analyse_path", analyse_with_a_forget)
    local_file_hash(local_file_id=lf.pk)
    assert not LocalFile.objects.exists() and not FileHashes.objects.exists() and uploads(model_root) == []
