"""Queue work only once the row that names it is committed (Zulip's rule)."""
from __future__ import annotations

from django.db import transaction


def enqueue_hashing(local_file_id: int) -> None:
    from workers.tasks import hash_local_file

    transaction.on_commit(lambda: hash_local_file.delay(local_file_id))
