"""A stage's proof of life: the row's heartbeat_at is bumped while the stage runs.

Progress writes already bump it every second while bytes are read; this
covers the silent stretches (reading a big checkpoint's tensors, waiting on
a lock) so the reaper can tell a slow stage from a dead worker. The beat
comes from a thread of the working process: when the process dies (kill -9,
OOM, reboot) the beat stops with it, which is exactly the signal wanted.
"""
from __future__ import annotations

import contextlib
import logging
import threading

from django.conf import settings
from django.db import connection
from django.utils import timezone

from models_catalog.models import LocalFile

log = logging.getLogger(__name__)

# 30 s (MODELXREF_HEARTBEAT_SECONDS).
HEARTBEAT_SECONDS = settings.HEARTBEAT_SECONDS
# A row whose heartbeat is older than this lost its worker: by default three missed beats, 90 s
# (MODELXREF_STALLED_AFTER_SECONDS).
STALLED_AFTER_SECONDS = settings.STALLED_AFTER_SECONDS


@contextlib.contextmanager
def heartbeat(local_file_id: int, *, every: float = HEARTBEAT_SECONDS):
    def beat():
        LocalFile.objects.filter(
            pk=local_file_id, status__in=(LocalFile.Status.HASHING, LocalFile.Status.ANALYSING),
        ).update(heartbeat_at=timezone.now())

    with beating(beat, name=f"heartbeat-{local_file_id}", every=every):
        yield


@contextlib.contextmanager
def beating(beat, *, name: str, every: float = HEARTBEAT_SECONDS):
    """Call `beat()` every `every` seconds from a thread while the block runs (jobs use it too)."""
    stop = threading.Event()

    def loop():
        try:
            while not stop.wait(every):
                beat()
        except Exception:  # a missed beat only makes the reaper act sooner; never break the stage
            log.exception("%s failed", name)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
