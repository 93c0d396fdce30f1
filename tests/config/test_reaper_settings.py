"""The reaper's bounds come from the environment; the product's values stay the defaults."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ("HEARTBEAT_SECONDS", "STALLED_AFTER_SECONDS", "REAP_EVERY_SECONDS", "UNSENT_AFTER_SECONDS")
SHOW = ("import json; from django.conf import settings as s; "
        f"print(json.dumps([getattr(s, n) for n in {NAMES!r}] + [s.CELERY_BEAT_SCHEDULE['local-files-reap']['schedule']]))")


def _settings(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELXREF_") and k != "DJANGO_SETTINGS_MODULE"}
    base.update(MODELXREF_DATA_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", SHOW], cwd=REPO, env=base,
                          capture_output=True, text=True, timeout=120)


def test_defaults_are_the_products_and_the_environment_shrinks_them(tmp_path):
    assert json.loads(_settings(tmp_path).stdout) == [30.0, 90.0, 60.0, 30.0, 60.0]
    fast = _settings(tmp_path, MODELXREF_HEARTBEAT_SECONDS="1", MODELXREF_STALLED_AFTER_SECONDS="4",
                     MODELXREF_REAP_EVERY_SECONDS="1", MODELXREF_UNSENT_AFTER_SECONDS="0.5")
    assert json.loads(fast.stdout) == [1.0, 4.0, 1.0, 0.5, 1.0]


def test_a_stall_bound_a_live_worker_could_miss_is_refused(tmp_path):
    done = _settings(tmp_path, MODELXREF_HEARTBEAT_SECONDS="30", MODELXREF_STALLED_AFTER_SECONDS="45")
    assert done.returncode != 0 and "at least twice MODELXREF_HEARTBEAT_SECONDS" in done.stderr
