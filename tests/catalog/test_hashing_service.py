import hashlib
import os
import zlib

import blake3
import pytest

from models_catalog.models import FileHashes, FolderMember, LocalFile
from models_catalog.services import hashing as hashing_service
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db


def _register(path, owner, monkeypatch):
    from models_catalog.services import register as register_service

    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: None)
    return local_file_register(paths=[str(path)], owner=owner).files[0]


def test_stores_every_hash_from_one_read(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors", payload=os.urandom(3000), metadata={"sshs_model_hash": "ab" * 32})
    lf = _register(f, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert lf.status == "done", lf.error
    h = lf.hashes
    assert h.sha256 == hashlib.sha256(data).hexdigest()
    assert h.autov2 == h.sha256[:10]
    assert h.autov3_full == hashlib.sha256(data[8 + n:]).hexdigest() and h.autov3 == h.autov3_full[:12]
    assert h.blake3 == blake3.blake3(data).hexdigest()
    assert h.crc32 == zlib.crc32(data).to_bytes(4, "little").hex()
    assert h.autov1 == ""  # under 2 MiB Civitai stores none
    assert h.embedded_model_hash == "ab" * 32 and h.embedded_differs
    assert lf.bytes_done == lf.size == len(data)


def test_redelivered_task_does_not_hash_again(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors")
    lf = _register(f, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    calls = []
    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", lambda *a, **k: calls.append(a))
    local_file_hash(local_file_id=lf.pk)
    assert calls == []


def test_vanished_file_gets_a_stored_error(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors")
    lf = _register(f, user, monkeypatch)
    f.unlink()
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "gone" in lf.error


def test_empty_file_gets_a_stored_error(model_root, user, monkeypatch):
    f = model_root / "empty.safetensors"
    f.write_bytes(b"")
    lf = _register(f, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "empty" in lf.error


def test_file_replaced_by_fifo_gets_a_stored_error(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors")
    lf = _register(f, user, monkeypatch)
    f.unlink()
    os.mkfifo(f)
    local_file_hash(local_file_id=lf.pk)  # must not block on the FIFO
    lf.refresh_from_db()
    assert lf.status == "error" and "FIFO" in lf.error


def test_result_dropped_when_row_was_requeued_meanwhile(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors")
    lf = _register(f, user, monkeypatch)
    real = hashing_service.hash_file_cached_with_identity

    def requeue_during_hash(*args, **kwargs):
        result = real(*args, **kwargs)
        LocalFile.objects.filter(pk=lf.pk).update(status="queued")  # a newer register won
        return result

    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", requeue_during_hash)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "queued" and not lf.has_engine_hashes


def test_unexpected_error_is_stored_not_left_hashing(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors")
    lf = _register(f, user, monkeypatch)

    def boom(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", boom)
    with pytest.raises(ZeroDivisionError):
        local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "internal error" in lf.error


def test_diffusers_folder_stores_members_and_digest(model_root, user, monkeypatch):
    pipe = model_root / "pipe"
    for sub in ("unet", "vae"):
        (pipe / sub).mkdir(parents=True)
        write_safetensors(pipe / sub / "diffusion_pytorch_model.safetensors", payload=sub.encode() * 8)
    (pipe / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}')
    lf = _register(pipe, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "done", lf.error
    members = list(FolderMember.objects.filter(folder=lf))
    assert [m.relative_path for m in members] == ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    for m in members:
        assert m.sha256 == hashlib.sha256((pipe / m.relative_path).read_bytes()).hexdigest()
    assert len(lf.hashes.folder_digest) == 64
    assert lf.size == sum(m.size for m in members)


def test_folder_member_symlinked_outside_the_roots_is_refused(model_root, tmp_path, user, monkeypatch):
    secret = write_safetensors(tmp_path / "secret.safetensors", payload=b"s" * 32)
    pipe = model_root / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    write_safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors")
    (pipe / "unet" / "extra.safetensors").symlink_to(secret)
    lf = _register(pipe, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "outside the allowed folders" in lf.error
    assert not FolderMember.objects.filter(folder=lf).exists()


def test_a_changed_file_replaces_its_hashes_in_the_same_row(model_root, user, monkeypatch):
    f = write_safetensors(model_root / "a.safetensors", payload=b"\x01" * 64)
    lf = _register(f, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    old = FileHashes.objects.get(local_file=lf)
    write_safetensors(f, payload=b"\x02" * 64)
    os.utime(f, ns=(lf.mtime_ns + 10**9, lf.mtime_ns + 10**9))
    _register(f, user, monkeypatch)
    local_file_hash(local_file_id=lf.pk)
    [new] = FileHashes.objects.filter(local_file=lf)
    assert new.pk == old.pk and new.sha256 == hashlib.sha256(f.read_bytes()).hexdigest() != old.sha256
    assert new.computed_at > old.computed_at
