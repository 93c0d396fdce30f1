"""docker-compose.yml is checked without docker (not installable here): it parses, its services are the
Procfile's processes with the same commands, and every variable it sets is one the settings read."""
import re
import shlex
from pathlib import Path

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
