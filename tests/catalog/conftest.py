from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from tests.factories import DUPLICATE_PAYLOAD, register_and_hash, write_lora
from tests.model_builders import write_safetensors
from tests.fakes.civitai import fake_civitai  # noqa: F401  (the stand-in fixture the civitai fixture takes)



@pytest.fixture
def model_root(tmp_path, settings) -> Path:
    """A model root the tests may register under, with its own data dir."""
    root = tmp_path / "models"
    root.mkdir()
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    settings.MODEL_ROOTS = [root]
    settings.DATA_DIR = data
    settings.UPLOAD_DIR = data / "uploads"
    settings.HASH_CACHE_PATH = data / "hash-cache.sqlite3"
    return root


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def sent_for_hashing(monkeypatch):
    """Ids register sends to the hashing queue, recorded instead of sent; each row is marked as sent
    (a row whose message never left would be queued again by the next register)."""
    from django.utils import timezone

    from models_catalog.models import LocalFile
    from models_catalog.services import register as register_service

    ids: list[int] = []

    def sent(*, local_files):
        ids.extend(lf.pk for lf in local_files)
        LocalFile.objects.filter(pk__in=[lf.pk for lf in local_files]).update(enqueued_at=timezone.now())

    monkeypatch.setattr(register_service, "enqueue_hashing_many", sent)
    return ids


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters live in the cache; user ids repeat across tests."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pair(model_root, user, sent_for_hashing):
    """Alice's keeper and an exact copy of it, in two folders under her root, registered and hashed."""
    (model_root / "keep").mkdir()
    (model_root / "old").mkdir()
    keeper = write_safetensors(model_root / "keep" / "model.safetensors", payload=DUPLICATE_PAYLOAD)
    copy = model_root / "old" / "model-copy.safetensors"
    copy.write_bytes(keeper.read_bytes())
    k, c = register_and_hash(user, keeper, copy)
    return {"keeper": keeper, "copy": copy, "k": k, "c": c, "size": copy.stat().st_size}


@pytest.fixture
def civitai(fake_civitai, settings, monkeypatch):
    settings.CIVITAI_ENABLED = True
    settings.CIVITAI_API_BASE = fake_civitai.base_url
    from models_catalog.services import identify

    monkeypatch.setattr(identify, "lookups_requested", lambda: None)  # tests run the batch themselves
    return fake_civitai


@pytest.fixture
def unknown_lora(model_root, user, sent_for_hashing, settings):
    settings.CIVITAI_ENABLED = False  # nobody knows it: the file's own words are all there is
    path = write_lora(model_root / "lora_0001.safetensors")
    from models_catalog.models import LocalFile
    from models_catalog.services.hashing import local_files_hash
    from models_catalog.services.register import local_file_register

    outcome = local_file_register(paths=[str(path)], owner=user)
    assert not outcome.refused
    local_files_hash(local_file_ids=sent_for_hashing)
    lf = LocalFile.objects.get(path=str(path))
    assert lf.status == "done"
    return lf
