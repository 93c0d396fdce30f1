"""With no model roots configured, `make run` and `register` say so and show how to set one."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from models_catalog.services.register import local_file_register

ROOT = Path(__file__).resolve().parents[2]
HOW_TO = "MODELXREF_MODEL_ROOTS=/path/to/models make run"


def model_roots_output() -> str:
    out = io.StringIO()
    call_command("model_roots", stdout=out)
    return out.getvalue()


def test_no_roots_says_registering_is_off_and_the_command_that_turns_it_on(settings):
    settings.MODEL_ROOTS = []
    text = model_roots_output()
    assert "No model roots are configured, so registering files in place is off" in text
    assert HOW_TO in text


def test_configured_roots_are_listed_and_a_missing_one_is_flagged(settings, tmp_path):
    settings.MODEL_ROOTS = [tmp_path, tmp_path / "gone"]
    assert model_roots_output().splitlines() == [
        "Model roots (files under these may be registered in place):",
        f"  {tmp_path}",
        f"  {tmp_path / 'gone'}  (unusable: it does not exist)",
    ]


def test_make_run_prints_the_model_roots_before_it_starts_the_servers():
    done = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    roots = next(i for i, line in enumerate(lines) if line.endswith("manage.py model_roots"))
    start = next(i for i, line in enumerate(lines) if "honcho start" in line)
    assert roots < start


@pytest.mark.django_db
def test_register_without_roots_is_refused_with_the_same_how_to(settings, tmp_path, user):
    settings.MODEL_ROOTS = []
    [(_, why)] = local_file_register(paths=[str(tmp_path)], owner=user).refused
    assert "registering files in place is off" in why and HOW_TO in why
