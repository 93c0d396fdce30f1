"""The analysis stage: format, pickle safety and tensor fingerprint, after hashing."""
from __future__ import annotations

from django.utils import timezone

from models_catalog.models import LocalFile


def local_file_analyse(*, local_file_id: int) -> None:
    # Filled in by the model-files work; until then hashing is the last stage.
    LocalFile.objects.filter(pk=local_file_id, status=LocalFile.Status.ANALYSING).update(
        status=LocalFile.Status.DONE, heartbeat_at=timezone.now()
    )
