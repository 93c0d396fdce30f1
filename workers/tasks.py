"""Thin Celery tasks: an id in, a service call, a retry policy. Services do the work."""
from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def hash_local_file(local_file_id: int) -> None:
    from models_catalog.services.hashing import local_file_hash

    local_file_hash(local_file_id=local_file_id)
