"""CPU time of processes on this machine, from /proc: user + system seconds, which (unlike wall time)
leave out what a busy host steals from the VM. Used by run.py (gunicorn, PostgreSQL, locust over a run)
and single_requests.py (the PostgreSQL backend serving one connection)."""
from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_stat(pid: int) -> tuple[str, int, float]:
    """(command, parent pid, CPU seconds used) of one process; OSError if it has ended."""
    head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)  # the command may hold spaces
    fields = tail.split()
    return head.split("(", 1)[1], int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def all_process_stats() -> dict[int, tuple[str, int, float]]:
    """process_stat of every process now running, by pid."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = process_stat(int(d.name))
            except OSError:
                continue  # ended while we looked
    return out
