"""The one job runner (services/jobs.py): a job runs once per claim, and every end is explained."""
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from models_catalog.models import Job
from models_catalog.services import huggingface as hf_service
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS
from models_catalog.services.huggingface import hf_index_job_run
from models_catalog.services.jobs import retry_countdown
from workers.sources.huggingface import HuggingFaceError

pytestmark = pytest.mark.django_db


class _Version:
    pk, model_id, external_id = 7, 3, "abcdef0123456789"

    class files:
        @staticmethod
        def count():
            return 2


@pytest.fixture
def index_calls(monkeypatch):
    calls = []

    def index(**params):
        calls.append(params)
        return _Version()

    monkeypatch.setattr(hf_service, "hf_repo_index", index)
    return calls


def _job(user, **kw):
    return Job.objects.create(owner=user, kind=Job.Kind.HF_INDEX, params={"repo_id": "org/x"}, **kw)


def test_a_redelivered_message_of_a_finished_job_does_nothing(user, index_calls):
    job = _job(user)
    hf_index_job_run(job_id=job.pk)
    hf_index_job_run(job_id=job.pk)  # acks_late: the same message again
    job.refresh_from_db()
    assert len(index_calls) == 1 and job.status == "done" and job.result["files"] == 2


def test_a_redelivered_message_while_the_first_delivery_runs_does_nothing(user, index_calls):
    job = _job(user, status=Job.Status.RUNNING, message="asking the Hub")
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now())  # its worker beats
    hf_index_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert index_calls == [] and job.status == "running"


def test_a_running_job_whose_worker_died_is_run_again_by_the_redelivered_message(user, index_calls):
    job = _job(user, status=Job.Status.RUNNING)
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=STALLED_AFTER_SECONDS + 5))
    hf_index_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert len(index_calls) == 1 and job.status == "done"


def test_an_unexpected_exception_leaves_a_failed_job_with_the_error_and_a_logged_traceback(user, monkeypatch, caplog):
    def broken(**params):
        raise KeyError("files")

    monkeypatch.setattr(hf_service, "hf_repo_index", broken)
    job = _job(user)
    with caplog.at_level(logging.ERROR, logger="models_catalog.services.jobs"), pytest.raises(KeyError):
        hf_index_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "error" and "internal error (KeyError)" in job.message and "files" in job.message
    logged = [r for r in caplog.records if r.name == "models_catalog.services.jobs"]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is KeyError


def test_a_transient_error_puts_the_job_back_to_queued_with_the_reason_and_goes_to_the_task(user, monkeypatch):
    def limited(**params):
        raise HuggingFaceError("429", kind="rate_limited", retryable=True, retry_after=12)

    monkeypatch.setattr(hf_service, "hf_repo_index", limited)
    job = _job(user)
    with pytest.raises(HuggingFaceError) as raised:
        hf_index_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "queued" and "rate-limiting" in job.message
    assert retry_countdown(raised.value) == 12


def test_a_final_source_error_is_explained_without_a_retry(user, monkeypatch):
    def missing(**params):
        raise HuggingFaceError("404", kind="repo_not_found")

    monkeypatch.setattr(hf_service, "hf_repo_index", missing)
    job = _job(user)
    hf_index_job_run(job_id=job.pk)  # nothing raised: nothing for the task to retry
    job.refresh_from_db()
    assert job.status == "error" and "does not exist" in job.message


def test_the_retry_rule_bounds_what_a_source_asks():
    from workers.sources.civitai_data import CivitaiUnavailable

    assert retry_countdown(CivitaiUnavailable("5xx")) == 30
    assert retry_countdown(CivitaiUnavailable("429", retry_after=1)) == 5
    assert retry_countdown(CivitaiUnavailable("429", retry_after=86400)) == 600


def test_the_hf_verify_task_does_not_run_a_job_twice(user, monkeypatch):
    from models_catalog.services import hf_verify_job
    from workers import tasks

    calls = []
    monkeypatch.setattr(hf_verify_job, "_verify", lambda job: calls.append(job.pk) or ("ok", {}))
    job = Job.objects.create(owner=user, kind=Job.Kind.HF_VERIFY, params={"repo_id": "org/x", "local_dir": "/x"})
    tasks.hf_verify_local_dir.apply(args=[job.pk])
    tasks.hf_verify_local_dir.apply(args=[job.pk])
    job.refresh_from_db()
    assert calls == [job.pk] and job.status == "done"
