"""HTTPS settings come from the environment: dev-friendly by default, and the production set
documented in README passes `manage.py check --deploy` without a warning."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]


def documented_production_env() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- production-settings -->\s*```sh\n(.*?)```", readme, re.S).group(1)
    env = dict(re.findall(r"^([A-Z_]+)=(.*)$", block, re.M))
    assert env["SECRET_KEY"].startswith("<")  # a placeholder in the docs: never a real key
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


def _check_deploy(tmp_path: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(MODELXREF_DATA_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="config.settings", **extra)
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_documented_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = documented_production_env()
    assert {"SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
            "SECURE_PROXY_SSL_HEADER"} <= set(env)
    result = _check_deploy(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout + result.stderr


def test_check_deploy_still_warns_about_the_dev_defaults(tmp_path):
    result = _check_deploy(tmp_path, {})
    assert result.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):  # HSTS, SSL redirect, session and CSRF cookies
        assert f"security.{check}" in result.stderr + result.stdout


def test_https_settings_default_to_plain_http_for_make_run():
    assert not (settings.SESSION_COOKIE_SECURE or settings.CSRF_COOKIE_SECURE or settings.SECURE_SSL_REDIRECT)
    assert settings.SECURE_HSTS_SECONDS == 0 and settings.SECURE_PROXY_SSL_HEADER is None


def test_proxy_header_is_given_as_the_proxy_names_it(monkeypatch):
    from config.settings import env_proxy_header

    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto")
    assert env_proxy_header("SECURE_PROXY_SSL_HEADER") == ("HTTP_X_FORWARDED_PROTO", "https")
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO")
    assert env_proxy_header("SECURE_PROXY_SSL_HEADER") == ("HTTP_X_FORWARDED_PROTO", "https")
