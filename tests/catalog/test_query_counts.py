"""Every list page and list endpoint costs the same number of queries for 2 rows as for 12.

A list that runs a query per row is fast in a test and slow at 100,000 files; this catches it
whatever the list shows (identities, matches, update badges, thumbnails...).
"""
import hashlib

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from models_catalog.models import (
    FileHashes, Job, LocalFile, Match, QuarantineEntry, Source, SourceFile, SourceModel, SourceVersion,
)
from models_catalog.services.tokens import api_token_create

pytestmark = pytest.mark.django_db


def seed(owner, n: int, start: int) -> None:
    """n identified files (each with a duplicate), n catalog models, n jobs and n quarantined files."""
    for i in range(start, start + n):
        model = SourceModel.objects.create(source=Source.CIVITAI, external_id=str(i), name=f"Model {i}", type="LORA")
        version = SourceVersion.objects.create(model=model, external_id=f"{i}0", name="v1", base_model="SDXL 1.0",
                                               trained_words=[f"word{i}"])
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        source = SourceFile.objects.create(version=version, external_id=f"{i}00", name=f"m{i}.safetensors", sha256=sha)
        for copy in ("", "-copy"):
            lf = LocalFile.objects.create(owner=owner, origin="registered", path=f"/m/{i}{copy}.safetensors",
                                          name=f"m{i}{copy}.safetensors", status="done", size=100, format="safetensors",
                                          safety_verdict="safe", content_id=f"c{i}", precision_id=f"p{i}",
                                          fingerprint={"dtypes": {"F16": 1}, "components": {}})
            FileHashes.objects.create(local_file=lf, size=100, sha256=sha, autov2=sha[:10])
            Match.objects.create(local_file=lf, source_file=source, kind="exact" if not copy else "renamed", evidence="e")
        Job.objects.create(owner=owner, kind="hf_index", params={"repo_id": f"org/r{i}"}, status="done")
        gone = LocalFile.objects.create(owner=owner, origin="registered", path=f"/q/{i}.safetensors", name=f"q{i}",
                                        status="done", size=10, quarantined_at=timezone.now())
        QuarantineEntry.objects.create(owner=owner, local_file=gone, original_path=f"/m/q{i}.safetensors",
                                       quarantine_path=f"/q/{i}.safetensors", size=10)


PAGES = ["/", "/?state=identified", "/?search=safetensors", "/catalog/", "/catalog/?q=model", "/catalog/?q=word1",
         "/duplicates/", "/duplicates/export.csv", "/duplicates/export.json", "/quarantine/", "/hf/", "/tokens/"]
ENDPOINTS = ["/api/v1/files/", "/api/v1/files/?search=safetensors", "/api/v1/models/", "/api/v1/models/?search=model",
             "/api/v1/models/?search=word1", "/api/v1/duplicates/", "/api/v1/quarantine/", "/api/v1/jobs/"]


def queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
        if response.streaming:  # the exports: their queries run as the body is sent
            b"".join(response.streaming_content)
    assert response.status_code == 200, (url, response.content[:300] if not response.streaming else url)
    return len(ctx)


@pytest.fixture
def clients(user):
    web = Client()
    web.force_login(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    return web, api


@pytest.mark.parametrize("url", PAGES + ENDPOINTS)
def test_list_query_count_does_not_grow_with_the_rows(url, user, clients):
    client = clients[1] if url.startswith("/api/") else clients[0]
    seed(user, 2, start=0)
    queries(client, url)  # the first call also stamps the token's last use, once
    few = queries(client, url)
    seed(user, 10, start=100)
    assert queries(client, url) == few, url
