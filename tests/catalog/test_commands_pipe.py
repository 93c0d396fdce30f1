"""Every management command ends quietly when the reader of its output goes away (`... | head -1`).

The commands run as real processes (`manage.py ...`) on a SQLite database of their own,
because the broken pipe only exists between processes.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import models_catalog.management.commands as command_package
from models_catalog.management.commands._base import EXIT_PIPE_CLOSED, PipeSafeCommand
from tests.model_builders import write_safetensors

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict:
    """The environment of a fresh install: migrated, with its admin, no services."""
    base = tmp_path_factory.mktemp("cli")
    (base / "models").mkdir()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "MODELXREF_DATA_DIR": str(base / "data"),
           "MODELXREF_MODEL_ROOTS": str(base / "models"), "CIVITAI_ENABLED": "false"}
    for key in ("DATABASE_URL", "REDIS_URL", "PYTHONUNBUFFERED"):
        env.pop(key, None)
    for args in (["migrate", "--noinput", "-v0"], ["ensure_admin"]):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return env


def _run_into_closed_pipe(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader has already gone: every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, cwd=ROOT, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["duplicates", "--json"],
    ["lookup", "--offline", "0123456789"],
    ["ensure_admin"],  # says nothing when the admin exists: a quiet command stays quiet (and exits 0)
], ids=lambda a: a[0])
def test_command_whose_reader_is_gone_exits_quietly(cli_env, args):
    done = _run_into_closed_pipe([sys.executable, "manage.py", *args], cli_env)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert done.returncode == (0 if args == ["ensure_admin"] else EXIT_PIPE_CLOSED)


def test_inspect_into_a_closed_pipe_exits_quietly(cli_env):
    model = write_safetensors(Path(cli_env["MODELXREF_MODEL_ROOTS"]) / "tiny.safetensors")
    for extra in ([], ["--json"]):
        done = _run_into_closed_pipe([sys.executable, "manage.py", "inspect", str(model), *extra], cli_env)
        assert (done.returncode, done.stderr) == (EXIT_PIPE_CLOSED, ""), done.stderr



def _command_script(handle_body: str) -> str:
    """A throw-away PipeSafeCommand run from the command line, doing `handle_body`."""
    return textwrap.dedent("""
        import django
        django.setup()
        from models_catalog.management.commands._base import PipeSafeCommand

        class Throwaway(PipeSafeCommand):
            def handle(self, *args, **options):
                {body}

        Throwaway().run_from_argv(["manage.py", "throwaway"])
    """).format(body=handle_body)


# Keeps writing long after the reader has read its first line, as under `| head -1`.
CHATTY = _command_script('for n in range(200_000): self.stdout.write(f"line {n}")')


def test_reader_that_stops_after_the_first_line_gets_no_traceback(cli_env):
    proc = subprocess.Popen([sys.executable, "-c", CHATTY], cwd=ROOT, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "line 0\n"
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == EXIT_PIPE_CLOSED
    finally:
        proc.kill()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_other_broken_pipes_keep_their_traceback(cli_env):
    """Only a closed stdout/stderr is the reader leaving; any other EPIPE is a real error."""
    script = _command_script('raise BrokenPipeError(32, "a socket to some server")')
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cli_env, capture_output=True, text=True)
    assert done.returncode == 1 and "BrokenPipeError: [Errno 32] a socket to some server" in done.stderr


def test_every_command_is_pipe_safe():
    names = [m.name for m in pkgutil.iter_modules(command_package.__path__) if not m.name.startswith("_")]
    assert {"register", "inspect", "lookup", "duplicates", "hf_index", "verify_hf", "import_hashes", "push",
            "ensure_admin"} <= set(names)
    for name in names:
        command = importlib.import_module(f"{command_package.__name__}.{name}").Command
        assert issubclass(command, PipeSafeCommand), name
