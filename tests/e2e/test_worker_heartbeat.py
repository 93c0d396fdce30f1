"""Real workers beat: a WorkerHeartbeat row per Procfile worker while it runs, gone after a clean stop."""
import json
import time

from tests.e2e.conftest import manage, worker_running
from tests.procfile import stop_workers

SNIPPET = ("import json; from models_catalog.models import WorkerHeartbeat as W; "
           "print(json.dumps(sorted(W.objects.values_list('queues', flat=True))))")


def _beats(env) -> list[str]:
    done = manage(env, "shell", "-c", SNIPPET)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _soon(env, expected, timeout=20) -> list[str]:
    deadline = time.monotonic() + timeout  # the first beat comes from a thread started at "ready."
    while (beats := _beats(env)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return beats


def test_each_running_worker_has_a_heartbeat_and_a_clean_stop_removes_it(e2e_env, tmp_path):
    with worker_running(e2e_env, tmp_path) as workers:
        assert _soon(e2e_env, ["hashing", "lookups"]) == ["hashing", "lookups"]
        stop_workers(workers)
        assert _beats(e2e_env) == []
