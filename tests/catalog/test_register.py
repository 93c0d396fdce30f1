import hashlib
import os

import pytest

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services import register as register_service
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """Record enqueued ids instead of running tasks."""
    ids: list[int] = []
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: ids.extend(lf.pk for lf in local_files))
    return ids


def test_registers_file_under_root_and_queues_it(model_root, user, queued):
    f = write_safetensors(model_root / "a.safetensors")
    outcome = local_file_register(paths=[str(f)], owner=user)
    assert [lf.path for lf in outcome.queued] == [str(f)]
    assert queued == [outcome.queued[0].pk]
    row = LocalFile.objects.get()
    assert (row.status, row.size, row.origin) == ("queued", f.stat().st_size, "registered")


def test_refuses_path_outside_roots(model_root, tmp_path, user, queued):
    outside = write_safetensors(tmp_path / "outside.safetensors")
    outcome = local_file_register(paths=[str(outside)], owner=user)
    assert outcome.refused and "outside the model roots" in outcome.refused[0][1]
    assert not LocalFile.objects.exists() and not queued


def test_refuses_dotdot_and_symlink_escapes(model_root, tmp_path, user, queued):
    outside = write_safetensors(tmp_path / "secret.safetensors")
    (model_root / "link.safetensors").symlink_to(outside)
    sub = model_root / "sub"
    sub.mkdir()
    outcome = local_file_register(
        paths=[str(model_root / "link.safetensors"), str(sub / ".." / ".." / "secret.safetensors")], owner=user
    )
    assert len(outcome.refused) == 2
    assert not LocalFile.objects.exists()


def test_symlink_inside_folder_pointing_outside_is_refused(model_root, tmp_path, user, queued):
    outside = write_safetensors(tmp_path / "secret.safetensors")
    write_safetensors(model_root / "ok.safetensors")
    (model_root / "escape.safetensors").symlink_to(outside)
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert [os.path.basename(lf.path) for lf in outcome.queued] == ["ok.safetensors"]
    assert any("escape.safetensors" in raw for raw, _ in outcome.refused)


def test_no_roots_configured_is_a_clear_refusal(settings, tmp_path, user, queued):
    settings.MODEL_ROOTS = []
    outcome = local_file_register(paths=[str(tmp_path)], owner=user)
    assert "MODELXREF_MODEL_ROOTS" in outcome.refused[0][1]


def test_missing_path_is_refused(model_root, user, queued):
    outcome = local_file_register(paths=[str(model_root / "nope.ckpt")], owner=user)
    assert "no such file" in outcome.refused[0][1]


def test_folder_walk_picks_models_by_content_not_name(model_root, user, queued):
    write_safetensors(model_root / "model.safetensors")
    write_safetensors(model_root / "renamed-weights.dat")  # safetensors content, odd name
    (model_root / "README.txt").write_text("not a model")
    (model_root / "notes.md").write_text("# notes")
    (model_root / "empty.safetensors").write_bytes(b"")
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert sorted(os.path.basename(lf.path) for lf in outcome.queued) == ["model.safetensors", "renamed-weights.dat"]


def test_diffusers_folder_is_one_unit(model_root, user, queued):
    pipe = model_root / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    write_safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors")
    write_safetensors(model_root / "single.safetensors")
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    units = sorted((os.path.basename(lf.path), lf.is_folder) for lf in outcome.queued)
    assert units == [("pipe", True), ("single.safetensors", False)]


def test_fifo_named_explicitly_gets_a_stored_error(model_root, user, queued):
    fifo = model_root / "pipe.safetensors"
    os.mkfifo(fifo)
    outcome = local_file_register(paths=[str(fifo)], owner=user)
    row = LocalFile.objects.get()
    assert row.status == "error" and "FIFO" in row.error
    assert outcome.failed == [row] and not queued


def test_unchanged_file_costs_no_task(model_root, user, queued):
    f = write_safetensors(model_root / "a.safetensors")
    first = local_file_register(paths=[str(f)], owner=user).queued[0]
    # Pretend the worker finished.
    LocalFile.objects.filter(pk=first.pk).update(status="done")
    FileHashes.objects.create(local_file=first, size=f.stat().st_size, sha256=hashlib.sha256(f.read_bytes()).hexdigest())
    queued.clear()
    again = local_file_register(paths=[str(f)], owner=user)
    assert [lf.pk for lf in again.unchanged] == [first.pk] and not again.queued and not queued


def test_changed_file_is_queued_again(model_root, user, queued):
    f = write_safetensors(model_root / "a.safetensors")
    first = local_file_register(paths=[str(f)], owner=user).queued[0]
    LocalFile.objects.filter(pk=first.pk).update(status="done")
    FileHashes.objects.create(local_file=first, size=1, sha256="0" * 64)
    queued.clear()
    write_safetensors(f, payload=b"\x01" * 32)
    os.utime(f, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    again = local_file_register(paths=[str(f)], owner=user)
    assert [lf.pk for lf in again.queued] == [first.pk] and queued == [first.pk]
    assert LocalFile.objects.count() == 1


def test_same_path_for_two_users_is_two_rows(model_root, user, other_user, queued):
    f = write_safetensors(model_root / "a.safetensors")
    local_file_register(paths=[str(f)], owner=user)
    local_file_register(paths=[str(f)], owner=other_user)
    assert LocalFile.objects.count() == 2


def test_row_whose_worker_died_is_queued_again(model_root, user, queued):
    from datetime import timedelta

    from django.utils import timezone

    f = write_safetensors(model_root / "a.safetensors")
    first = local_file_register(paths=[str(f)], owner=user).queued[0]
    LocalFile.objects.filter(pk=first.pk).update(status="hashing", heartbeat_at=timezone.now())
    queued.clear()
    assert local_file_register(paths=[str(f)], owner=user).unchanged  # a live worker has it
    LocalFile.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert [lf.pk for lf in local_file_register(paths=[str(f)], owner=user).queued] == [first.pk] == queued
