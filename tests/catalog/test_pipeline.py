"""The flow reads in one place: only services/pipeline.py (and enqueue.py's hashing send) talk to the broker."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SENDS = re.compile(r"(?<!retry)\.(delay|apply_async)\(")  # RetryPolicy.delay is a back-off, not a send


def test_every_message_to_the_workers_is_sent_from_the_pipeline():
    senders = {str(p.relative_to(ROOT)) for base in ("models_catalog", "workers") for p in (ROOT / base).rglob("*.py")
               if SENDS.search(p.read_text())}
    assert senders == {"models_catalog/services/pipeline.py", "models_catalog/services/enqueue.py"}


@pytest.mark.django_db
def test_a_job_is_sent_only_once_it_is_committed(user, monkeypatch, django_capture_on_commit_callbacks):
    from models_catalog.models import Job
    from models_catalog.services.pipeline import enqueue_job
    from workers import tasks

    sent = []
    monkeypatch.setattr(tasks.hf_index_repo, "delay", sent.append)
    job = Job.objects.create(owner=user, kind=Job.Kind.HF_INDEX, params={"repo_id": "org/x"})
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_job(job)
        assert sent == []
    assert sent == [job.pk]
