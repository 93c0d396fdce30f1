"""docker-compose.yml: Debian's docker-compose (1.29, no daemon needed for `config`) validates it against
the Compose schema; its services are the Procfile's processes with the same commands, and every variable
it sets is one the settings read."""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def normalised(command: str) -> list[str]:
    """Arguments with `--opt=value` as `--opt value`, the virtualenv prefix dropped, --bind left out
    (the container listens on 0.0.0.0:8000, make run on HOST:PORT)."""
    args: list[str] = []
    for arg in shlex.split(command):
        if arg.startswith("--") and "=" in arg:
            args += arg.split("=", 1)
        else:
            args.append(arg.removeprefix(".venv/bin/"))
    if "--bind" in args:
        i = args.index("--bind")
        del args[i:i + 2]
    return args


def test_compose_services_run_the_procfile_commands():
    services = compose()["services"]
    processes = procfile()
    assert {"postgres", "redis"} | set(processes) == set(services)
    for name, command in processes.items():
        theirs = services[name]["command"]
        if theirs.startswith("sh -c"):  # web: migrate and ensure_admin first, as make run does
            theirs = shlex.split(theirs)[2].split("&&")[-1].strip()
        assert normalised(theirs) == normalised(command), name


def test_every_app_service_shares_the_app_definition_and_the_models_are_read_only():
    services = compose()["services"]
    for name in procfile():
        service = services[name]
        assert service["build"] == "." and service["depends_on"] == ["postgres", "redis"], name
        assert any(v.endswith(":/models:ro") for v in service["volumes"]), name
        assert service["environment"]["MODELXREF_MODEL_ROOTS"] == "/models"


def test_every_variable_compose_sets_is_read_by_the_settings():
    settings_text = (ROOT / "config" / "settings.py").read_text()
    for name in compose()["services"]["web"]["environment"]:
        assert re.search(rf'["\']{name}["\']', settings_text), f"{name} is set in docker-compose.yml but never read"


def _compose_config(path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is required in CI (.ci/run installs Debian's package)", pytrace=False)
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # SECRET_KEY is required by the file (${SECRET_KEY:?...}): a deployment must set one.
    env = {**os.environ, "SECRET_KEY": "compose-check"}
    return subprocess.run([binary, "-f", str(path), "config", "-q"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=path.parent)


def test_docker_compose_accepts_the_file(tmp_path):
    result = _compose_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_a_broken_copy(tmp_path):
    """The check checks: a service option the schema does not know fails it."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("volumes:", "volumez:", 1))
    result = _compose_config(broken)
    assert result.returncode != 0 and "volumez" in (result.stderr + result.stdout)
