"""A real worker hashing while the load test runs (`run.py --hashing-files N`): files on disk, `register`, a
celery worker on the same Redis and PostgreSQL, as a library being added to while fifty people use it.

What it reports: the files the worker finished during the run, and how often the library revision (the
key of every user's cached duplicate groups, models_catalog/library_revision.py) moved meanwhile: each
move makes every user's next duplicates view a computed one. Afterwards it removes what it added (the
rows, the files, the queued tasks), so that the load database stays as generate.py made it.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

REVISION_KEY = ":1:modelxref:library-revision"  # Django's cache key of library_revision.KEY
QUEUES = ("hashing", "lookups")


def write_model_files(root: Path, *, count: int, megabytes: int) -> None:
    """`count` safetensors files, each one F16 tensor of `megabytes` random bytes: each is hashed, its
    tensors read and fingerprinted, and none is a copy of another."""
    root.mkdir(parents=True, exist_ok=True)
    size = megabytes << 20
    header = json.dumps({"weight": {"dtype": "F16", "shape": [size // 2], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    for i in range(count):
        with (root / f"hashing-{i:03d}.safetensors").open("wb") as f:
            f.write(struct.pack("<Q", len(header)) + header)
            for _ in range(megabytes):
                f.write(os.urandom(1 << 20))


def start_worker(venv_bin: Path, cwd: Path, env: dict, log: Path, *, processes: int, nice: int = 0) -> subprocess.Popen:
    """One worker on both queues (what the Procfile's hashing and lookups workers do, in one process group);
    `nice`: at that scheduling priority, as a worker that gives the web processes the CPU first."""
    cmd = ["nice", "-n", str(nice)] * bool(nice) + [str(venv_bin / "celery"), "-A", "config", "worker", "-Q", ",".join(QUEUES), "-n", "load-hashing@%h",
           "--concurrency", str(processes), "--loglevel", "WARNING"]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def register(venv_bin: Path, cwd: Path, env: dict, root: Path, *, user: str) -> None:
    subprocess.run([str(venv_bin / "python"), "manage.py", "register", str(root), "--user", user], cwd=cwd, env=env,
                   check=True, capture_output=True)


def revision(redis_url: str) -> int | None:
    import redis

    value = redis.Redis.from_url(redis_url).get(REVISION_KEY)
    return int(value) if value is not None else None


COUNT_AND_FORGET = """
import os
from models_catalog.models import LocalFile
rows = LocalFile.objects.filter(path__startswith=os.environ["LOAD_HASHING_ROOT"])
print(rows.filter(status="done").count(), rows.exclude(status__in=("queued", "hashing", "analysing")).count())
rows.delete()
"""


def finish(venv_bin: Path, cwd: Path, env: dict, root: Path, worker: subprocess.Popen, redis_url: str) -> dict:
    """Stop the worker, count what it finished, and remove every trace of it."""
    import redis

    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
    client = redis.Redis.from_url(redis_url)
    client.delete(*QUEUES, "unacked", "unacked_index")  # tasks of files the run did not reach
    done = subprocess.run([str(venv_bin / "python"), "manage.py", "shell", "-c", COUNT_AND_FORGET], cwd=cwd,
                          env=dict(env, LOAD_HASHING_ROOT=str(root) + "/"), check=True, capture_output=True, text=True)
    finished, ended = (int(n) for n in done.stdout.split()[-2:])
    shutil.rmtree(root, ignore_errors=True)
    return {"files_done": finished, "files_ended": ended}
