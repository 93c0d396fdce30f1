"""Nothing stuck: rows whose worker died, or whose message never reached the broker, are sent again.

Runs on the beat schedule and when a worker starts. Sending again is safe:
every stage checks for its finished result first and writes with a
compare-and-set, and a stage that sees a live heartbeat on its row leaves it
to the worker that owns it. A row that lost its worker MAX_STAGE_ATTEMPTS
times in a row is failed with the reason instead of being retried forever
(a file that kills the worker every time: out of memory, a reader bug).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from models_catalog.models import LocalFile
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS

log = logging.getLogger(__name__)

MAX_STAGE_ATTEMPTS = 3
# A queued row with no message (the broker was down when it was queued) is sent after this; sooner
# could race the message its register is about to send. 30 s (MODELXREF_UNSENT_AFTER_SECONDS).
UNSENT_AFTER = timedelta(seconds=settings.UNSENT_AFTER_SECONDS)
# A queued row whose message may have died with a worker (the file broker drops what a dead
# worker had reserved) is sent again after this; a duplicate is a no-op for the stages.
RESEND_QUEUED_AFTER = timedelta(minutes=30)
Status = LocalFile.Status
DOING = {Status.HASHING: "hashing", Status.ANALYSING: "reading"}


@dataclass
class ReapOutcome:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # queued rows whose message is (re)sent


def stalled_rows(now=None):
    now = now or timezone.now()
    return LocalFile.objects.filter(
        status__in=(Status.HASHING, Status.ANALYSING),
        heartbeat_at__lt=now - timedelta(seconds=STALLED_AFTER_SECONDS),
    ).exclude(origin=LocalFile.Origin.PUSHED)


def local_files_reap(*, resend_queued_after: timedelta = RESEND_QUEUED_AFTER) -> ReapOutcome:
    """Requeue rows whose worker died, fail those that died too often, send unsent messages."""
    from models_catalog.services.pipeline import enqueue_hashing_now

    now = timezone.now()
    outcome = ReapOutcome()
    for lf in stalled_rows(now).only("id", "status", "stage_attempts", "heartbeat_at"):
        # Compare-and-set on what we saw: a worker that is alive after all wins.
        same = LocalFile.objects.filter(pk=lf.pk, status=lf.status, heartbeat_at=lf.heartbeat_at)
        if lf.stage_attempts + 1 >= MAX_STAGE_ATTEMPTS:
            if same.update(status=Status.ERROR, stage_attempts=F("stage_attempts") + 1, heartbeat_at=now, error=(
                    f"the worker stopped {MAX_STAGE_ATTEMPTS} times while {DOING[lf.status]} this file "
                    "(killed, out of memory, or the machine restarted); register it again to retry")):
                outcome.failed.append(lf.pk)
            continue
        if same.update(status=Status.QUEUED, stage_attempts=F("stage_attempts") + 1, bytes_done=0, enqueued_at=None,
                       error=f"its worker stopped while {DOING[lf.status]} it; queued again"):
            outcome.requeued.append(lf.pk)
    unsent = Q(enqueued_at__isnull=True, updated_at__lt=now - UNSENT_AFTER) | Q(enqueued_at__lt=now - resend_queued_after)
    unsent_ids = list(LocalFile.objects.filter(status=Status.QUEUED).filter(unsent | Q(pk__in=outcome.requeued))
                      .exclude(origin=LocalFile.Origin.PUSHED).values_list("pk", flat=True))
    for pk in unsent_ids:
        if not enqueue_hashing_now(pk):
            # The broker went away since this run was delivered: the next run sends the rest.
            log.warning("reaper: the broker is unreachable; %d queued file(s) wait for it",
                        len(unsent_ids) - len(outcome.sent))
            break
        outcome.sent.append(pk)
    if outcome.requeued or outcome.failed or outcome.sent:
        log.warning("reaper: %d requeued after a dead worker, %d failed, %d messages (re)sent",
                    len(outcome.requeued), len(outcome.failed), len(outcome.sent))
    return outcome
