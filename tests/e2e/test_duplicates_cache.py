"""The duplicate groups a page shows are cached in Redis; a worker's writes, in another process, must
move the library revision so the next view groups afresh (models_catalog/library_revision.py)."""
import json
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import manage, worker_running
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.e2e

SHOWN = """
import json
from models_catalog.models import LocalFile
from models_catalog.services.duplicates import shown_duplicate_groups
owner = LocalFile.objects.order_by("pk").first().owner
print(json.dumps([sorted(m.name for m in g.members) for g in shown_duplicate_groups(owner=owner)]))
"""


def shown(env: dict) -> list[list[str]]:
    """What a web process would show, asked from a process of its own (as gunicorn's are)."""
    done = manage(env, "shell", "-c", SHOWN)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_workers_writes_are_seen_by_the_next_view_of_cached_duplicates(e2e_env, e2e_redis_url, tmp_path):
    root = Path(e2e_env["MODELXREF_MODEL_ROOTS"])
    write_safetensors(root / "a.safetensors", b"\x01" * 64)
    write_safetensors(root / "a-copy.safetensors", b"\x01" * 64)
    cache = redis.Redis.from_url(e2e_redis_url)
    with worker_running(e2e_env, tmp_path):
        done = manage(e2e_env, "register", str(root), "--wait", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        assert shown(e2e_env) == [["a-copy.safetensors", "a.safetensors"]]
        assert cache.keys("*modelxref:duplicates:*"), "the groups were not cached"
        assert shown(e2e_env) == [["a-copy.safetensors", "a.safetensors"]]  # the cached answer, same groups

        write_safetensors(root / "a-third.safetensors", b"\x01" * 64)
        write_safetensors(root / "b.safetensors", b"\x02" * 64)
        write_safetensors(root / "b-copy.safetensors", b"\x02" * 64)
        done = manage(e2e_env, "register", str(root), "--wait", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        # the hashing worker wrote the new rows: a new revision, so grouped afresh
        assert sorted(shown(e2e_env)) == [["a-copy.safetensors", "a-third.safetensors", "a.safetensors"],
                                          ["b-copy.safetensors", "b.safetensors"]]
