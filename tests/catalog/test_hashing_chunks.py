"""Small files are hashed in chunks (one task for many), big files and folders alone."""
from types import SimpleNamespace

import pytest

from models_catalog.models import LocalFile
from models_catalog.services import enqueue
from models_catalog.services import hashing as hashing_service
from models_catalog.services import register as register_service
from models_catalog.services.enqueue import hashing_chunks
from models_catalog.services.hashing import ChunkFailed, local_files_hash
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors
from workers import tasks

MiB = 1024**2


def _row(pk, size, *, folder=False):
    return SimpleNamespace(pk=pk, bytes_total=0 if folder else size, size=None, is_folder=folder)


def test_small_files_share_a_chunk_up_to_the_file_limit():
    rows = [_row(i, 1000) for i in range(1, 8)]
    assert hashing_chunks(local_files=rows, max_files=3, max_bytes=MiB) == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_chunk_closes_before_it_would_pass_the_byte_limit():
    rows = [_row(1, 400), _row(2, 400), _row(3, 400), _row(4, 100)]
    assert hashing_chunks(local_files=rows, max_files=10, max_bytes=1000) == [[1, 2], [3, 4]]


def test_big_files_and_folders_travel_alone_and_order_is_kept():
    rows = [_row(1, 10), _row(2, 5000), _row(3, 10), _row(4, 0, folder=True), _row(5, 10)]
    assert hashing_chunks(local_files=rows, max_files=10, max_bytes=1000) == [[2], [4], [1, 3, 5]]


def test_limits_are_read_when_called(monkeypatch):
    monkeypatch.setattr(enqueue, "CHUNK_MAX_FILES", 2)
    assert hashing_chunks(local_files=[_row(i, 1) for i in range(1, 4)]) == [[1, 2], [3]]


@pytest.fixture
def sent(monkeypatch):
    """What reached the broker: ("one", id) or ("chunk", ids)."""
    calls = []
    monkeypatch.setattr(tasks.hash_local_file, "delay", lambda pk: calls.append(("one", pk)))
    monkeypatch.setattr(tasks.hash_local_files, "delay", lambda ids: calls.append(("chunk", ids)))
    return calls


@pytest.mark.django_db
def test_register_sends_small_files_as_chunks_after_commit(model_root, user, sent, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(enqueue, "CHUNK_MAX_FILES", 4)
    for i in range(6):
        write_safetensors(model_root / f"m{i}.safetensors", payload=bytes([i]) * 64)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = local_file_register(paths=[str(model_root)], owner=user)
        assert sent == []  # nothing leaves before the rows are committed
    ids = [lf.pk for lf in outcome.queued]
    assert sent == [("chunk", ids[:4]), ("chunk", ids[4:])]


@pytest.mark.django_db
def test_register_sends_a_lone_file_as_a_one_file_task(model_root, user, sent, django_capture_on_commit_callbacks):
    f = write_safetensors(model_root / "only.safetensors")
    with django_capture_on_commit_callbacks(execute=True):
        [lf] = local_file_register(paths=[str(f)], owner=user).queued
    assert sent == [("one", lf.pk)]


def _registered(model_root, user, monkeypatch, n):
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: None)
    for i in range(n):
        write_safetensors(model_root / f"f{i}.safetensors", payload=bytes([i + 1]) * 128)
    return [lf.pk for lf in local_file_register(paths=[str(model_root)], owner=user).queued]


@pytest.mark.django_db
def test_a_failing_file_does_not_fail_its_siblings(model_root, user, monkeypatch):
    ids = _registered(model_root, user, monkeypatch, 3)
    bad = LocalFile.objects.get(pk=ids[1]).path
    real = hashing_service.hash_file_cached_with_identity

    def broken_for_one(path, **kwargs):
        if str(path) == bad:
            raise ZeroDivisionError("bug")
        return real(path, **kwargs)

    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", broken_for_one)
    with pytest.raises(ChunkFailed, match="1 of 3"):
        local_files_hash(local_file_ids=ids)
    rows = {lf.pk: lf for lf in LocalFile.objects.filter(pk__in=ids)}
    assert [rows[pk].status for pk in ids] == ["done", "error", "done"]
    assert "internal error" in rows[ids[1]].error


@pytest.mark.django_db
def test_a_redelivered_chunk_reads_nothing_again(model_root, user, monkeypatch):
    ids = _registered(model_root, user, monkeypatch, 3)
    local_files_hash(local_file_ids=ids)
    reads = []
    monkeypatch.setattr(hashing_service, "hash_file_cached_with_identity", lambda *a, **k: reads.append(a))
    local_files_hash(local_file_ids=ids)
    assert reads == []
    assert set(LocalFile.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"done"}


@pytest.mark.django_db
def test_the_chunk_task_hashes_every_file(model_root, user, monkeypatch):
    ids = _registered(model_root, user, monkeypatch, 2)
    tasks.hash_local_files.run(ids)
    assert all(lf.status == "done" and lf.has_engine_hashes for lf in LocalFile.objects.filter(pk__in=ids))


@pytest.mark.django_db
def test_progress_is_written_only_once_a_file_takes_over_a_second(model_root, user, monkeypatch):
    [pk] = _registered(model_root, user, monkeypatch, 1)
    now = [1000.0]
    monkeypatch.setattr(hashing_service.time, "monotonic", lambda: now[0])
    progress = hashing_service.ProgressWriter(pk)
    progress(4096, 8192)  # a small file ends within its first second: no write beyond the stage's start
    assert LocalFile.objects.get(pk=pk).bytes_done == 0
    now[0] += hashing_service.PROGRESS_EVERY_SECONDS
    progress(8192, 8192)
    assert LocalFile.objects.get(pk=pk).bytes_done == 8192


@pytest.mark.django_db
def test_a_row_deleted_after_it_was_queued_is_skipped(model_root, user, monkeypatch):
    ids = _registered(model_root, user, monkeypatch, 2)
    LocalFile.objects.filter(pk=ids[0]).delete()
    local_files_hash(local_file_ids=ids)
    assert LocalFile.objects.get(pk=ids[1]).status == "done"
