"""Which queues have a live celery worker. Each worker writes its WorkerHeartbeat row when ready and
every HEARTBEAT_SECONDS after (config/celery.py); a row older than STALLED_AFTER_SECONDS is a worker
that died without its clean shutdown. `register --wait` asks this so that, with no worker, it says
so instead of showing a progress that never moves."""
from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from models_catalog.models import WorkerHeartbeat
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS

HASHING_QUEUE, LOOKUPS_QUEUE = "hashing", "lookups"


def worker_beat(*, name: str, queues: list[str], started_at: datetime) -> None:
    WorkerHeartbeat.objects.update_or_create(
        name=name, defaults={"queues": ",".join(sorted(queues)), "started_at": started_at, "seen_at": timezone.now()})


def worker_gone(*, name: str) -> None:
    WorkerHeartbeat.objects.filter(name=name).delete()


def live_queues(*, now: datetime | None = None) -> set[str]:
    now = now or timezone.now()
    rows = WorkerHeartbeat.objects.filter(seen_at__gte=now - timedelta(seconds=STALLED_AFTER_SECONDS))
    return {q for queues in rows.values_list("queues", flat=True) for q in queues.split(",") if q}


def no_worker_for(queue: str, *, now: datetime | None = None) -> str:
    """A sentence when no live worker consumes `queue`, else ""."""
    if settings.CELERY_TASK_ALWAYS_EAGER or queue in live_queues(now=now):  # eager: the caller is the worker
        return ""
    now = now or timezone.now()
    last = WorkerHeartbeat.objects.filter(Q(queues__contains=queue)).order_by("-seen_at").first()
    since = f" (the last one was seen {timezone.localtime(last.seen_at):%H:%M:%S})" if last else ""
    return (f"no worker is running for the {queue} queue{since}: start the workers (`make run`, or "
            f"`celery -A config worker -Q {queue}`); the files wait, queued, until one is")
