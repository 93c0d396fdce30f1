"""Nothing stuck, nothing lost: dead workers, a broker outage, swapped paths, two registers at once."""
from datetime import timedelta

import pytest
from django.utils import timezone

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS
from models_catalog.services.reaper import MAX_STAGE_ATTEMPTS, local_files_reap
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Messages handed to the broker, by row ids (no worker runs them)."""
    out = []
    from workers import tasks

    monkeypatch.setattr(tasks.hash_local_file, "delay", lambda pk: out.append([pk]))
    monkeypatch.setattr(tasks.hash_local_files, "delay", lambda ids: out.append(list(ids)))
    return out


def _long_ago(seconds=STALLED_AFTER_SECONDS + 5):
    return timezone.now() - timedelta(seconds=seconds)


def _registered(model_root, user, name="a.safetensors", **kw):
    write_safetensors(model_root / name, payload=name.encode() * 8)
    outcome = local_file_register(paths=[str(model_root / name)], owner=user)
    return outcome.queued[0] if outcome.queued else outcome.unchanged[0]


def test_a_row_whose_worker_died_mid_hash_is_queued_again_and_sent(model_root, user, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        lf = _registered(model_root, user)
    LocalFile.objects.filter(pk=lf.pk).update(status="hashing", bytes_done=10, heartbeat_at=_long_ago())
    outcome = local_files_reap()
    lf.refresh_from_db()
    assert outcome.requeued == [lf.pk] and outcome.sent == [lf.pk]
    assert lf.status == "queued" and lf.stage_attempts == 1 and "worker stopped while hashing" in lf.error
    assert lf.enqueued_at is not None and sent[-1] == [lf.pk]


def test_a_live_worker_is_left_alone_by_the_reaper_and_by_a_redelivered_message(model_root, user, sent):
    lf = _registered(model_root, user)
    LocalFile.objects.filter(pk=lf.pk).update(status="hashing", heartbeat_at=timezone.now(), enqueued_at=timezone.now())
    assert local_files_reap().requeued == []
    local_file_hash(local_file_id=lf.pk)  # the message again, while the first worker runs
    assert LocalFile.objects.get(pk=lf.pk).status == "hashing" and not FileHashes.objects.exists()


def test_a_file_that_kills_its_worker_every_time_ends_failed_with_the_reason(model_root, user, sent):
    lf = _registered(model_root, user)
    for attempt in range(MAX_STAGE_ATTEMPTS):
        LocalFile.objects.filter(pk=lf.pk).update(status="analysing", heartbeat_at=_long_ago())
        local_files_reap()
    lf.refresh_from_db()
    assert lf.status == "error" and f"stopped {MAX_STAGE_ATTEMPTS} times" in lf.error


@pytest.mark.django_db(transaction=True)  # real commits: the message is sent when register's transaction ends
def test_broker_down_keeps_the_rows_queued_and_the_reaper_sends_them_when_it_is_back(model_root, user, monkeypatch):
    from kombu.exceptions import OperationalError

    from workers import tasks

    def down(*args):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(tasks.hash_local_file, "delay", down)
    monkeypatch.setattr(tasks.hash_local_files, "delay", down)
    for i in range(3):
        write_safetensors(model_root / f"m{i}.safetensors", payload=bytes([i]) * 32)
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert len(outcome.queued) == 3 and "queue is unreachable" in outcome.queue_error
    rows = LocalFile.objects.all()
    assert {r.status for r in rows} == {"queued"} and all(r.enqueued_at is None for r in rows)
    assert all("waiting for the queue" in r.error for r in rows)
    assert local_files_reap().sent == []  # still down (and too recent)
    sent = []
    monkeypatch.setattr(tasks.hash_local_file, "delay", lambda pk: sent.append(pk))
    LocalFile.objects.update(updated_at=_long_ago(60))
    assert sorted(local_files_reap().sent) == sorted(r.pk for r in rows) == sorted(sent)
    assert all(r.enqueued_at is not None for r in LocalFile.objects.all())


@pytest.mark.django_db(transaction=True)
def test_broker_down_marks_and_counts_every_chunk_of_a_register_not_only_the_first(model_root, user, monkeypatch):
    from kombu.exceptions import OperationalError

    from models_catalog.services import enqueue
    from workers import tasks

    def down(*args):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.hash_local_file, "delay", down)
    monkeypatch.setattr(tasks.hash_local_files, "delay", down)
    monkeypatch.setattr(enqueue, "CHUNK_MAX_FILES", 2)
    for i in range(5):
        write_safetensors(model_root / f"m{i}.safetensors", payload=bytes([i]) * 32)
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert "5 file(s) stay queued" in outcome.queue_error
    assert all(r.status == "queued" and "waiting for the queue" in r.error for r in LocalFile.objects.all())


@pytest.mark.django_db(transaction=True)
def test_broker_down_during_a_chunked_register_marks_the_later_chunks_without_asking_it_again(model_root, user, monkeypatch):
    from kombu.exceptions import OperationalError

    from models_catalog.services import register as register_service
    from workers import tasks

    tries = []

    def down(*args):
        tries.append(args)
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.hash_local_files, "delay", down)
    monkeypatch.setattr(register_service, "CHUNK_SIZE", 2)
    for i in range(5):
        write_safetensors(model_root / f"m{i}.safetensors", payload=bytes([i]) * 32)
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert len(tries) == 1  # the first chunk found it down; the others do not wait on it again
    assert "2 file(s) stay queued" in outcome.queue_error and "3 more file(s)" in outcome.queue_error
    rows = LocalFile.objects.all()
    assert len(rows) == 5 and all(r.status == "queued" and r.enqueued_at is None and "waiting for the queue" in r.error
                                  for r in rows)


def test_register_again_resends_a_row_whose_message_never_left(model_root, user, sent, django_capture_on_commit_callbacks):
    lf = _registered(model_root, user)  # no on_commit run: like a broker that was down
    assert LocalFile.objects.get(pk=lf.pk).enqueued_at is None
    with django_capture_on_commit_callbacks(execute=True):
        again = local_file_register(paths=[lf.path], owner=user)
    assert [x.pk for x in again.queued] == [lf.pk] and sent == [[lf.pk]]


def test_a_symlink_swapped_in_after_register_is_refused_and_nothing_of_the_target_is_stored(model_root, user, tmp_path):
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"do not read me" * 50)
    lf = _registered(model_root, user)
    path = model_root / "a.safetensors"
    path.unlink()
    path.symlink_to(secret)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "symbolic link" in lf.error
    assert lf.size != secret.stat().st_size and not FileHashes.objects.exists()


def test_a_folder_on_the_path_swapped_for_a_link_is_refused(model_root, user, tmp_path):
    (model_root / "sub").mkdir()
    write_safetensors(model_root / "sub" / "m.safetensors", payload=b"x" * 64)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_safetensors(outside / "m.safetensors", payload=b"x" * 64)
    lf = local_file_register(paths=[str(model_root / "sub" / "m.safetensors")], owner=user).queued[0]
    (model_root / "sub" / "m.safetensors").unlink()
    (model_root / "sub").rmdir()
    (model_root / "sub").symlink_to(outside)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and not FileHashes.objects.exists()
    assert "outside the model roots" in lf.error or "leads elsewhere" in lf.error


def test_another_file_moved_into_place_after_register_is_refused(model_root, user):
    lf = _registered(model_root, user)
    other = model_root / "other.bin"
    write_safetensors(other, payload=b"other" * 20)
    other.replace(model_root / "a.safetensors")  # mv: a new inode under the registered name
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "another file was put in its place" in lf.error
    again = local_file_register(paths=[lf.path], owner=user)  # registering it again takes the new file
    local_file_hash(local_file_id=again.queued[0].pk)
    assert LocalFile.objects.get(pk=lf.pk).status == "done"


def test_two_registers_of_one_folder_at_once_end_with_one_set_of_rows(model_root, user, monkeypatch):
    """The second register read 'no rows yet' before the first committed (the race): no IntegrityError."""
    from models_catalog.services import register as register_service

    write_safetensors(model_root / "m.safetensors", payload=b"m" * 64)
    real_filter = LocalFile.objects.filter
    first = local_file_register(paths=[str(model_root)], owner=user)
    monkeypatch.setattr(register_service.LocalFile.objects, "filter",
                        lambda *a, **kw: real_filter(pk__in=[]) if "path__in" in kw else real_filter(*a, **kw))
    second = local_file_register(paths=[str(model_root)], owner=user)
    assert LocalFile.objects.count() == 1
    assert [x.pk for x in second.unchanged] == [first.queued[0].pk] and second.queued == []


@pytest.mark.django_db(transaction=True)
def test_register_api_answers_503_when_the_broker_is_down_and_keeps_the_rows(model_root, user, monkeypatch):
    from kombu.exceptions import OperationalError
    from rest_framework.test import APIClient

    from workers import tasks

    def down(*args):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.hash_local_file, "delay", down)
    write_safetensors(model_root / "m.safetensors", payload=b"q" * 64)
    api = APIClient()
    api.force_authenticate(user)
    resp = api.post("/api/v1/files/register/", {"paths": [str(model_root)]}, format="json")
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
    assert "kept" in resp.json()["error"]["message"]
    [row] = LocalFile.objects.all()
    assert row.status == "queued" and "waiting for the queue" in row.error
