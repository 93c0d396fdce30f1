"""The duplicates exports stream: a body in chunks, queries that do not grow with the rows, same content."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from models_catalog import views_tools
from models_catalog.services.duplicates import duplicate_groups
from tests.factories import login, seed_local

pytestmark = pytest.mark.django_db


def _groups_of_two(user, n: int, start: int = 0):
    for i in range(start, start + n):
        for copy in ("a", "b"):
            seed_local(user, f"g{i}-{copy}.safetensors", data=f"content {i}".encode())


def _export(client, fmt: str) -> tuple[bytes, int, object]:
    with CaptureQueriesContext(connection) as queries:
        resp = client.get(f"/duplicates/export.{fmt}")
        body = b"".join(resp.streaming_content)  # the queries of a lazy body run while it is read
    return body, len(queries), resp


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_queries_do_not_grow_with_the_rows(user, fmt, monkeypatch):
    monkeypatch.setattr(views_tools, "EXPORT_ROWS_PER_CHUNK", 4)  # several chunks even for small exports
    alice = login(user)
    _groups_of_two(user, 3)
    _, few, resp = _export(alice, fmt)
    assert isinstance(resp, StreamingHttpResponse)
    _groups_of_two(user, 40, start=3)
    body, many, _ = _export(alice, fmt)
    assert many == few
    if fmt == "csv":
        assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 86
    else:
        assert len(json.loads(body)["groups"]) == 43


def test_streamed_csv_is_what_one_write_gives(user, monkeypatch):
    monkeypatch.setattr(views_tools, "EXPORT_ROWS_PER_CHUNK", 3)
    _groups_of_two(user, 5)
    seed_local(user, "=HYPERLINK(1).safetensors", data=b"content 0")
    body, _, resp = _export(login(user), "csv")
    groups = duplicate_groups(owner=user, prefer_precision="lossless")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(views_tools.CSV_COLUMNS)
    for n, g in enumerate(groups, 1):
        for m in g.members:
            writer.writerow([n, g.model or "", "yes" if m.id == g.keep_id else "no", m.match, m.copy_set, m.reclaim,
                             views_tools._csv_safe(m.name), views_tools._csv_safe(m.path), m.format, m.precision,
                             m.size, g.reclaimable_bytes, g.lossless_bytes, g.reason, views_tools._csv_safe(m.evidence)])
    assert body.decode() == out.getvalue()
    assert "'=HYPERLINK(1).safetensors" in body.decode()


def test_streamed_json_is_the_document_json_response_gave(user):
    _groups_of_two(user, 5)
    body, _, resp = _export(login(user), "json")
    groups = duplicate_groups(owner=user, prefer_precision="lossless")
    assert resp["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "prefer_precision": "lossless", "reclaimable_bytes": sum(g.reclaimable_bytes for g in groups),
        "lossless_bytes": sum(g.lossless_bytes for g in groups), "lossy_bytes": sum(g.lossy_bytes for g in groups),
        "groups": json.loads(json.dumps([g.to_json() for g in groups], default=str))}
