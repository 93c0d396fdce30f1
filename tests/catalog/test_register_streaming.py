"""Registering a big folder streams: chunks of paths, each its own transaction and enqueue, and an
outcome of counts plus a bounded sample (issue #14)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from models_catalog.models import LocalFile
from models_catalog.services import register as register_service
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    """The rows each enqueue was given (one call per chunk)."""
    calls = []
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: calls.append(list(local_files)))
    return calls


def _folder(root, name, n):
    folder = root / name
    folder.mkdir()
    for i in range(n):
        write_safetensors(folder / f"m{i:03}.safetensors", payload=f"{name}{i}".encode() * 8)
    return folder


def test_a_big_folder_is_registered_chunk_by_chunk_and_the_outcome_stays_small(model_root, user, enqueued, monkeypatch):
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 4)
    monkeypatch.setattr(register_service, "SAMPLE_SIZE", 3)
    outcome = local_file_register(paths=[str(_folder(model_root, "big", 10))], owner=user)
    assert outcome.counts == {"queued": 10, "unchanged": 0, "failed": 0, "refused": 0}
    assert len(outcome.queued) == 3 and outcome.file_ids is None  # a sample, not every row
    assert [len(rows) for rows in enqueued] == [4, 4, 2]  # one enqueue per chunk
    assert LocalFile.objects.filter(owner=user, status=LocalFile.Status.QUEUED).count() == 10
    LocalFile.objects.update(enqueued_at=timezone.now())  # as the real enqueue records
    again = local_file_register(paths=[str(model_root / "big")], owner=user, keep_ids=True)
    assert again.counts["unchanged"] == 10 and len(again.unchanged) == 3
    assert sorted(again.file_ids) == sorted(LocalFile.objects.filter(owner=user).values_list("pk", flat=True))


def test_queries_grow_with_chunks_not_with_files(model_root, user, enqueued, monkeypatch):
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 5)
    counts = []
    for n in (5, 10, 15):
        folder = _folder(model_root, f"f{n}", n)
        with CaptureQueriesContext(connection) as queries:
            local_file_register(paths=[str(folder)], owner=user)
        counts.append(len(queries))
    per_chunk = counts[1] - counts[0]
    assert counts[2] - counts[1] == per_chunk and per_chunk <= 6, counts  # 5 more files: one chunk's queries
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 1000)
    with CaptureQueriesContext(connection) as queries:
        local_file_register(paths=[str(_folder(model_root, "one_chunk", 15))], owner=user)
    assert len(queries) == counts[0]  # 15 files in one chunk cost what 5 did


def test_the_first_chunk_is_committed_before_the_walk_goes_on(model_root, user, enqueued, monkeypatch):
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 2)
    files = [write_safetensors(model_root / f"p{i}.safetensors", payload=bytes([i]) * 32) for i in range(5)]
    seen_rows = []

    def paths():  # a lazy caller: by the time it gives the 3rd path, the first 2 are rows
        for i, f in enumerate(files):
            seen_rows.append(LocalFile.objects.filter(owner=user).count())
            yield str(f)

    outcome = local_file_register(paths=paths(), owner=user)
    assert outcome.counts["queued"] == 5
    assert seen_rows == [0, 0, 2, 2, 4]


def test_a_path_met_twice_across_chunks_is_one_row(model_root, user, enqueued, monkeypatch):
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 2)
    folder = _folder(model_root, "twice", 3)
    outcome = local_file_register(paths=[str(folder), str(folder / "m000.safetensors")], owner=user)
    assert LocalFile.objects.filter(owner=user).count() == 3
    # The second meeting finds the first one's row on its way (queued, message sent) only once sent;
    # here the enqueue is faked, so the row is re-queued in place, never duplicated.
    assert outcome.registered == 4 and outcome.counts["refused"] == 0


def test_a_lost_race_keeps_the_other_registers_row(model_root, user, enqueued, monkeypatch):
    f = write_safetensors(model_root / "race.safetensors")
    real_prepared = register_service._prepared

    def prepared_then_race(**kwargs):  # the other register creates the row after this one looked it up
        LocalFile.objects.create(owner=user, origin=LocalFile.Origin.REGISTERED, path=str(f), name=f.name)
        return real_prepared(**kwargs)

    monkeypatch.setattr(register_service, "_prepared", prepared_then_race)
    outcome = local_file_register(paths=[str(f)], owner=user)
    assert outcome.counts == {"queued": 0, "unchanged": 1, "failed": 0, "refused": 0}
    assert LocalFile.objects.count() == 1 and enqueued == [[]]  # the other register queues it
