"""The identify stage: local catalog first, then Civitai for what is still unknown.

Local matching runs inline at the end of analysis (same transaction), so a
file is never "done" without its matches or its pending lookups. Civitai is
asked by one batch runner that gathers the lookups of files hashed together.
"""
from __future__ import annotations

from django.conf import settings
from django.db import transaction

from models_catalog.models import LocalFile, Match
from models_catalog.services.civitai_lookup import LookupRun, civitai_lookup_run, local_file_request_lookups
from models_catalog.services.matching import EXACT_KINDS, local_file_match_loaded, relatives_rematch
from models_catalog.services.pipeline import lookups_requested


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
            lookups_requested()
    return matches


def civitai_batch_and_rematch(*, gather: bool = False, **kwargs) -> LookupRun:
    """Run pending Civitai lookups; each answer rematches the files it concerns in the same
    transaction (see civitai_lookup), and the AutoV3 fall-backs it leads to run in the same run."""
    return civitai_lookup_run(gather=gather, **kwargs)
