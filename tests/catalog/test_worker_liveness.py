"""`register --wait` says when no worker is alive for what its files wait for (issue #14, noticed)."""
import io
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from config import celery as celery_config
from models_catalog.models import LocalFile, WorkerHeartbeat
from models_catalog.services.worker_liveness import live_queues, no_worker_for
from tests.model_builders import write_safetensors


def _beat(name, queues, *, ago=0):
    WorkerHeartbeat.objects.create(name=name, queues=queues, started_at=timezone.now() - timedelta(hours=1),
                                   seen_at=timezone.now() - timedelta(seconds=ago))


@pytest.mark.django_db
def test_a_queue_is_live_only_while_its_worker_beats():
    _beat("hashing@a", "hashing")
    _beat("lookups@b", "lookups", ago=3600)  # died an hour ago without its clean shutdown
    assert live_queues() == {"hashing"}
    assert no_worker_for("hashing") == ""
    said = no_worker_for("lookups")
    assert said.startswith("no worker is running for the lookups queue (the last one was seen ")
    assert no_worker_for("hashing", now=timezone.now() + timedelta(hours=2)).startswith(
        "no worker is running for the hashing queue (the last one was seen")
    WorkerHeartbeat.objects.all().delete()
    assert no_worker_for("hashing").startswith("no worker is running for the hashing queue: start the workers")


@pytest.mark.django_db
def test_eager_tasks_need_no_worker(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # tasks run in the caller: no worker is expected
    assert no_worker_for("hashing") == ""


@pytest.mark.django_db
def test_register_wait_with_no_worker_says_so(model_root, user):
    write_safetensors(model_root / "a.safetensors")
    err_out = io.StringIO()
    with pytest.raises(CommandError) as err:
        call_command("register", str(model_root), "--user", user.username, "--wait", "--timeout", "0.4", stderr=err_out, stdout=io.StringIO())
    assert "warning: no worker is running for the hashing queue" in err_out.getvalue(), str(err.value)
    assert "no worker is running for the hashing queue" in str(err.value)


@pytest.mark.django_db
def test_register_wait_with_a_live_hashing_worker_does_not_warn(model_root, user):
    _beat("hashing@a", "hashing")
    write_safetensors(model_root / "a.safetensors")
    err_out = io.StringIO()
    with pytest.raises(CommandError) as err:
        call_command("register", str(model_root), "--user", user.username, "--wait", "--timeout", "0.4", stderr=err_out, stdout=io.StringIO())
    assert "hashed 0/1" in err_out.getvalue()  # it did wait and show progress
    assert "no worker" not in err_out.getvalue() and "no worker" not in str(err.value)


@pytest.mark.django_db(transaction=True)  # the beat runs in a thread with its own connection
def test_a_ready_worker_beats_with_its_queues_and_a_clean_shutdown_removes_it():
    queues = SimpleNamespace(consume_from={"hashing": object(), "lookups": object()})
    sender = SimpleNamespace(hostname="w1@host", app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)))
    celery_config.beat_while_alive(sender=sender)
    deadline = time.monotonic() + 5
    while not WorkerHeartbeat.objects.filter(name="w1@host").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert WorkerHeartbeat.objects.get(name="w1@host").queues == "hashing,lookups"
    assert live_queues() == {"hashing", "lookups"}
    celery_config.forget_at_shutdown(sender=sender)
    assert not WorkerHeartbeat.objects.exists()


def test_register_wait_reads_only_the_files_not_finished_yet(user, django_assert_num_queries):
    """A 100,000-file --wait must not read every row on every poll: a finished file is counted once."""
    from models_catalog.management.commands.register import _Watch
    from tests.factories import local_file

    done = local_file(user, "done.safetensors", data=b"done")  # hashed and read, unknown: finished
    queued = local_file(user, "queued.safetensors", data=b"queued", status=LocalFile.Status.QUEUED)
    gone = local_file(user, "gone.safetensors", data=b"gone", status=LocalFile.Status.QUEUED)
    watch = _Watch([done.pk, queued.pk, gone.pk])
    p = watch.poll(viewer=user, identities=True)
    assert (p.finished, p.hashed) == (1, 1) and watch.pending == [queued.pk, gone.pk]
    gone.delete()  # forgotten meanwhile: nothing more will happen to it
    with django_assert_num_queries(1):  # the two pending rows in one query; no identity for unhashed files
        p = watch.poll(viewer=user, identities=True)
    assert (p.finished, p.hashed) == (2, 2) and watch.pending == [queued.pk]
    LocalFile.objects.filter(pk=queued.pk).update(status=LocalFile.Status.DONE)
    p = watch.poll(viewer=user, identities=True)
    assert p.finished == 3 and watch.pending == [] and p.line(3).startswith("hashed 3/3 files")
