"""The Procfile is the one place the worker command lines live.

`make run` starts them through honcho; the end-to-end layer and bench/pipeline.py start the same
lines from here, so what is tested and measured is what runs.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = ROOT / "Procfile"


def procfile_entries(path: Path = PROCFILE) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        entries[name.strip()] = command.strip()
    return entries


def procfile_workers(path: Path = PROCFILE) -> dict[str, str]:
    """Every process `make run` starts except the web server."""
    return {name: cmd for name, cmd in procfile_entries(path).items() if name != "web"}


def option(command: str, *names: str) -> str | None:
    """The value of a command-line option (`--name=value` or `--name value`), or None."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        for name in names:
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
            if word == name and i + 1 < len(words):
                return words[i + 1]
    return None


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path
    copier: threading.Thread

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the worker and every process it started (its session: pool, beat)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[3]) == self.proc.pid:  # session id (the worker leads its own session)
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / os.sysconf("SC_CLK_TCK")


def _timestamped_copy(stream, log: Path) -> None:
    """The app's log lines carry no time; a profile needs when each task was received and ended."""
    with log.open("a") as out:
        for raw in iter(stream.readline, b""):
            out.write(f"{time.time():.3f} {raw.decode(errors='replace')}")
            out.flush()


def start_procfile_process(name: str, env: dict, log_dir: Path) -> Worker:
    """Start one Procfile line as honcho would (through a shell, in the repo), in a session of its own;
    its output goes to log_dir/<name>.log. Does not wait for it to be ready."""
    return start_process(name, procfile_entries()[name], env, log_dir)


def start_process(name: str, command: str, env: dict, log_dir: Path) -> Worker:
    """`command` started as start_procfile_process starts a Procfile line (bench variants of its lines)."""
    log = log_dir / f"{name}.log"
    log.write_text("")
    # `exec`: the pid is the program's own (celery, gunicorn), so SIGTERM gives it its warm shutdown.
    proc = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    copier = threading.Thread(target=_timestamped_copy, args=(proc.stdout, log), daemon=True)
    copier.start()
    return Worker(name, proc, log, copier)


def start_procfile_workers(env: dict, log_dir: Path, *, ready_timeout: float = 90,
                           only: tuple[str, ...] | None = None) -> list[Worker]:
    """Start every Procfile worker line (or the `only` ones), wait until each is ready."""
    names = list(procfile_workers())
    unknown = set(only or ()) - set(names)
    if unknown:
        raise ValueError(f"no such Procfile worker: {sorted(unknown)}")
    workers = [start_procfile_process(name, env, log_dir) for name in names if only is None or name in only]
    deadline = time.monotonic() + ready_timeout
    for worker in workers:
        while "ready." not in worker.log_text():
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                stop_workers(workers)
                raise RuntimeError(f"worker {worker.name} did not start:\n{worker.log_text()}")
            time.sleep(0.2)
    return workers


def stop_workers(workers: list[Worker], *, timeout: float = 30) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)  # its own session: the pool children go too
            worker.proc.wait()
        worker.copier.join(timeout=5)


def session_pids(worker: Worker) -> list[int]:
    """The processes still alive in the worker's session: celery, its pool children, an embedded beat."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == worker.proc.pid and fields[0] != "Z":  # a zombie is dead, only not reaped yet
            pids.append(int(stat.parent.name))
    return pids


def kill_whole(worker: Worker, *, timeout: float = 10) -> None:
    """kill -9 of the worker and every process it started, at once: no warm shutdown, no message given back,
    as when the machine loses power or the OOM killer takes the lot."""
    os.killpg(worker.proc.pid, signal.SIGKILL)  # the worker leads its own session and process group
    worker.proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while session_pids(worker):  # pool children are reparented to init, which reaps them
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {worker.name}: processes {session_pids(worker)} survived SIGKILL")
        time.sleep(0.05)
    worker.copier.join(timeout=5)
