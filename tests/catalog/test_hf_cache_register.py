import hashlib
import os

import pytest

from models_catalog.models import FileHashes
from models_catalog.services import hashing as hashing_service
from models_catalog.services import register as register_service
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.matching import local_file_match
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db
COMMIT = "a" * 40


def make_cache(root, *, corrupt_size=False):
    repo = root / "hub" / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    tmp = write_safetensors(root / "tmp.safetensors", payload=b"\x09" * 512)
    data = tmp.read_bytes()
    tmp.unlink()
    sha = hashlib.sha256(data).hexdigest()
    (blobs / sha).write_bytes(data + (b"x" if corrupt_size else b""))
    (snap / "model.safetensors").symlink_to(f"../../blobs/{sha}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snap / "model.safetensors", sha


def test_hf_cache_file_is_identified_from_the_layout_without_hashing(model_root, user, monkeypatch):
    link, sha = make_cache(model_root)
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: None)
    read = []
    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", lambda *a, **k: read.append(a))
    [lf] = local_file_register(paths=[str(model_root / "hub")], owner=user).queued
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert read == [] and lf.status == "done", lf.error
    assert lf.name == "model.safetensors"
    h = FileHashes.objects.get(local_file=lf)
    assert (h.sha256, h.source) == (sha, "hf-cache")
    [m] = local_file_match(local_file_id=lf.pk)
    assert m.kind == "exact" and m.source_file.version.model.name == "org/tiny"
    assert m.source_file.version.external_id == COMMIT
    assert lf.safety_verdict == "safe"  # still scanned: identification is free, safety is not skipped


def test_cache_blob_whose_size_disagrees_with_the_hub_is_hashed_normally(model_root, user, monkeypatch):
    from models_catalog.models import Source, SourceFile, SourceModel, SourceVersion

    link, sha = make_cache(model_root, corrupt_size=True)
    version = SourceVersion.objects.create(model=SourceModel.objects.create(source=Source.HUGGINGFACE, external_id="model:org/tiny", name="org/tiny"), external_id=COMMIT)
    true_size = os.path.getsize(os.path.realpath(link)) - 1
    SourceFile.objects.create(version=version, external_id="model.safetensors", name="model.safetensors", sha256=sha, size=true_size)
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: None)
    [lf] = local_file_register(paths=[str(link)], owner=user).queued
    local_file_hash(local_file_id=lf.pk)
    h = FileHashes.objects.get(local_file=lf)
    assert h.source == "engine" and h.sha256 != sha
    assert h.sha256 == hashlib.sha256(open(os.path.realpath(link), "rb").read()).hexdigest()
