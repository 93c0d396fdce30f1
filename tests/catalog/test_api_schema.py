"""The OpenAPI schema: generates without warnings, validates, documents every route, and the
API behaves as it says under schemathesis (no 5xx for any generated request)."""
from __future__ import annotations

import time

import pytest
import schemathesis
import yaml
from django.core.cache import cache
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from models_catalog.models import Job
from tests.model_builders import write_safetensors
from tests.factories import catalog_file, local_file, match, token_client  # noqa: F401

pytestmark = pytest.mark.django_db

ROUTES = {
    "/api/v1/auth/token/": {"post"}, "/api/v1/lookup/": {"get", "post"},
    "/api/v1/files/": {"get"}, "/api/v1/files/{id}/": {"get", "delete"}, "/api/v1/files/upload/": {"post"},
    "/api/v1/files/{id}/link/": {"post", "delete"},
    "/api/v1/files/register/": {"post"}, "/api/v1/files/push/": {"post"}, "/api/v1/files/{id}/convert/": {"post"},
    "/api/v1/models/": {"get"}, "/api/v1/models/{id}/": {"get"}, "/api/v1/versions/{id}/": {"get"},
    "/api/v1/duplicates/": {"get"}, "/api/v1/jobs/": {"get"}, "/api/v1/jobs/{id}/": {"get"},
    "/api/v1/jobs/hf-index/": {"post"}, "/api/v1/jobs/hf-verify/": {"post"},
    "/api/v1/duplicates/actions/": {"post"}, "/api/v1/quarantine/": {"get"},
    "/api/v1/quarantine/restore/": {"post"}, "/api/v1/quarantine/purge/": {"post"},
}


def test_schema_generates_without_warnings_and_validates(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert {path: set(ops) & {"get", "post", "delete", "put", "patch"} for path, ops in schema["paths"].items()} == ROUTES
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_schema_documents_the_error_format_and_the_push_contract():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    push = schema["paths"]["/api/v1/files/push/"]["post"]
    assert push["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    outcome = schema["components"]["schemas"]["PushOutcome"]
    assert set(outcome["properties"]) == {"created", "updated", "unchanged", "ids", "errors"}
    assert set(schema["components"]["schemas"]["PushRequest"]["properties"]) == {"host", "files"}
    error = schema["components"]["schemas"]["ErrorInner"]
    assert set(error["properties"]) == {"code", "message", "detail"}
    upload = schema["paths"]["/api/v1/files/upload/"]["post"]
    assert "413" in upload["responses"] and "multipart/form-data" in upload["requestBody"]["content"]
    for code in ("200", "201"):  # 200: you already had these bytes; 201: stored
        assert upload["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/UploadedFile")
    assert "already_had" in schema["components"]["schemas"]["UploadedFile"]["properties"]
    forget = schema["paths"]["/api/v1/files/{id}/"]["delete"]["responses"]["200"]["content"]["application/json"]
    assert {"stored_copy", "freed_bytes"} <= set(schema["components"]["schemas"][forget["schema"]["$ref"].rsplit("/", 1)[1]]["properties"])


def test_swagger_ui_is_served_from_the_sidecar_not_a_cdn():
    resp = APIClient().get("/api/docs/")
    html = resp.content.decode()
    assert resp.status_code == 200 and "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html
    asset = APIClient().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


# --- schemathesis -----------------------------------------------------------------------------


class _InProcessWSGI:
    """The Django WSGI app, minus the per-request connection closing: requests run inside the
    test's transaction (as Django's own test client arranges)."""

    def __init__(self):
        self.app = get_wsgi_application()

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            return self.app(environ, start_response)
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(user, other_user, model_root):
    """Rows for generated ids to hit now and then: files, catalog, jobs of both users."""
    sf = catalog_file(data=b"fuzz")
    mine = local_file(user, "mine.safetensors", data=b"fuzz", format="safetensors")
    match(mine, sf)
    local_file(other_user, "theirs.safetensors", data=b"fuzz")
    write_safetensors(model_root / "m.safetensors")
    Job.objects.create(owner=user, kind="hf_index", params={"repo_id": "o/m"})
    Job.objects.create(owner=other_user, kind="hf_index", params={"repo_id": "o/theirs"})
    return {"token": token_client(user)._credentials["HTTP_AUTHORIZATION"]}


# schemathesis' own pytest integration (`from_fixture(...).parametrize()`) does not run on
# pytest 9 (it sets the removed `Function._nodeid`), so each operation gets a hypothesis test here.
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _fuzz(operation, mode, token: str, seen: dict):
    """A hypothesis test for one operation: every generated request, none may get a 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        cache.clear()  # no throttling in the way of the fuzzing
        response = case.call(headers={"Authorization": token})
        case.validate_response(response, checks=[not_a_server_error])
        seen.setdefault(operation.label, set()).add(response.status_code)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body

    return run


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_api_never_answers_with_a_server_error(seeded, mode):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", _InProcessWSGI())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in ROUTES.values())
    started = time.monotonic()
    seen: dict[str, set[int]] = {}
    for operation in operations:
        _fuzz(operation, mode, seeded["token"], seen)()
    assert time.monotonic() - started < 60
    assert set(seen) == {op.label for op in operations}
    if mode is GenerationMode.POSITIVE:
        # Generated valid requests do get through, not just bounce off validation.
        ok = {label for label, codes in seen.items() if any(200 <= c < 300 for c in codes)}
        assert {"GET /api/v1/files/", "GET /api/v1/models/", "GET /api/v1/jobs/", "GET /api/v1/duplicates/"} <= ok
