"""The identify stage: local catalog first, then Civitai for what is still unknown."""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from models_catalog.models import FileHashes, LocalFile, Match
from models_catalog.services.civitai_lookup import civitai_lookup_run, local_file_request_lookups
from models_catalog.services.matching import EXACT_KINDS, local_file_match, local_files_rematch


def enqueue_identify(local_file_id: int) -> None:
    from workers.tasks import identify_local_file

    transaction.on_commit(lambda: identify_local_file.delay(local_file_id))


def enqueue_civitai_batch() -> None:
    from workers.tasks import civitai_lookup_batch

    # Several files finishing together enqueue several runs; each run takes
    # whatever is pending, so the extra ones end at once with nothing to do.
    transaction.on_commit(lambda: civitai_lookup_batch.apply_async(countdown=2))


def local_file_identify(*, local_file_id: int, ask_civitai: bool | None = None) -> list[Match]:
    """Match from what the catalog knows; if no exact match, request Civitai lookups."""
    if ask_civitai is None:
        ask_civitai = settings.CIVITAI_ENABLED
    matches = local_file_match(local_file_id=local_file_id)
    if any(m.kind in EXACT_KINDS for m in matches) or not ask_civitai:
        return matches
    lf = LocalFile.objects.filter(pk=local_file_id).first()
    if lf is not None and local_file_request_lookups(local_file=lf):
        enqueue_civitai_batch()
    return matches


def civitai_batch_and_rematch(**kwargs) -> None:
    """Run pending Civitai lookups, then rematch the local files their answers concern."""
    run = civitai_lookup_run(**kwargs)
    if not run.resolved_values:
        return
    values = [v.lower() for v in run.resolved_values]
    q = Q(sha256__in=values) | Q(blake3__in=values) | Q(autov3__in=[v for v in values if len(v) == 12])
    ids = set(FileHashes.objects.filter(q).values_list("local_file_id", flat=True))
    # Files whose SHA256 missed may now have fall-back lookups to run.
    if ids:
        for lf in LocalFile.objects.filter(pk__in=ids):
            if local_file_request_lookups(local_file=lf):
                enqueue_civitai_batch()
        local_files_rematch(local_file_ids=ids)
