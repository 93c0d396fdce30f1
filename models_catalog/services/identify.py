"""The identify stage: local catalog first, then Civitai for what is still unknown.

Local matching runs inline at the end of analysis (same transaction), so a
file is never "done" without its matches or its pending lookups. Civitai is
asked by one batch runner that gathers the lookups of files hashed together.
"""
from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from models_catalog.models import LocalFile, Match
from models_catalog.services.civitai_lookup import LookupRun, civitai_lookup_run, local_file_request_lookups
from models_catalog.services.matching import EXACT_KINDS, local_file_match_loaded, relatives_rematch

# While set, a batch run is on its way: finishing files do not queue another one.
BATCH_SCHEDULED_KEY = "modelxref:civitai-batch-scheduled"
BATCH_SCHEDULED_TTL = 120  # seconds; a run lost with its worker frees the key by then


def enqueue_identify(local_file_id: int) -> None:
    """For rows that skip analysis (pushed, imported): identify them in a task of their own."""
    from workers.tasks import identify_local_file

    transaction.on_commit(lambda: identify_local_file.delay(local_file_id))


def enqueue_civitai_batch(*, countdown: float = 2) -> None:
    from workers.tasks import civitai_lookup_batch

    def send():
        # One scheduled run at a time; duplicates would be harmless (each run claims rows), only wasteful.
        if cache.add(BATCH_SCHEDULED_KEY, True, timeout=BATCH_SCHEDULED_TTL):
            civitai_lookup_batch.apply_async(countdown=countdown)

    transaction.on_commit(send)


def batch_run_started() -> None:
    cache.delete(BATCH_SCHEDULED_KEY)


def local_file_identify(*, local_file_id: int, ask_civitai: bool | None = None) -> list[Match]:
    """Match from what the catalog knows; if no exact match, request Civitai lookups.
    A new exact match also rematches the files that reach a source through this one."""
    if ask_civitai is None:
        ask_civitai = settings.CIVITAI_ENABLED
    with transaction.atomic(savepoint=False):  # inside analysis' transaction: no savepoint round trips
        lf = LocalFile.objects.select_related("hashes").filter(pk=local_file_id).first()
        if lf is None:
            return []
        matches = local_file_match_loaded(local_file=lf)
        if any(m.kind in EXACT_KINDS for m in matches):
            relatives_rematch(local_file_ids={local_file_id})
            return matches
        if not ask_civitai:
            return matches
        if any(row.state == row.State.PENDING for row in local_file_request_lookups(local_file=lf)):
            enqueue_civitai_batch()
    return matches


def civitai_batch_and_rematch(*, gather: bool = False, **kwargs) -> LookupRun:
    """Run pending Civitai lookups; each answer rematches the files it concerns in the same
    transaction (see civitai_lookup), and the AutoV3 fall-backs it leads to run in the same run."""
    return civitai_lookup_run(gather=gather, **kwargs)
