"""POST /api/v1/duplicates/actions/ and the quarantine endpoints: jobs, dry runs, and nobody else's files."""
from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

from models_catalog.models import Job, LocalFile, QuarantineEntry
from models_catalog.services.file_actions import quarantine_files
from tests.factories import error_of, token_client  # noqa: F401
from tests.factories import register_and_hash  # noqa: F401

pytestmark = pytest.mark.django_db

URL = "/api/v1/duplicates/actions/"


def test_a_dry_run_on_a_group_answers_at_once_with_the_plan(pair, user):
    resp = token_client(user).post(URL, {"action": "hardlink", "group": pair["k"].pk, "dry_run": True}, format="json")
    assert resp.status_code == 200, resp.content
    job = resp.json()
    assert job["kind"] == "hardlink" and job["status"] == "done"
    assert job["params"] == {"keeper_id": pair["k"].pk, "copy_ids": [pair["c"].pk], "dry_run": True}
    [item] = job["result"]["items"]
    assert item["outcome"] == "planned" and job["result"]["bytes_freed"] == pair["size"]
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode


def test_an_action_is_queued_as_a_job_that_a_worker_runs(pair, user, eager_celery, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        resp = token_client(user).post(URL, {"action": "hardlink", "file_ids": [pair["c"].pk], "keeper_id": pair["k"].pk},
                                       format="json")
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    job = Job.objects.get(pk=resp.json()["id"])
    assert job.status == "done" and job.result["done"] == 1
    assert os.stat(pair["copy"]).st_ino == pair["k"].inode
    assert token_client(user).get(f"/api/v1/jobs/{job.pk}/").json()["result"]["bytes_freed"] == pair["size"]


def test_quarantine_list_restore_and_purge(pair, user, eager_celery, django_capture_on_commit_callbacks):
    client = token_client(user)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(URL, {"action": "quarantine", "group": pair["c"].pk}, format="json").status_code == 202
    [entry] = client.get("/api/v1/quarantine/").json()["results"]
    assert entry["file_id"] == pair["c"].pk and entry["original_path"] == str(pair["copy"]) and entry["size"] == pair["size"]
    assert client.get(f"/api/v1/files/{pair['c'].pk}/").json()["quarantined_at"] is not None
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/api/v1/quarantine/restore/", {"entry_ids": [entry["id"]]}, format="json")
    assert resp.status_code == 202 and pair["copy"].exists() and not QuarantineEntry.objects.exists()
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    dry = client.post("/api/v1/quarantine/purge/", {"dry_run": True}, format="json").json()
    assert dry["result"]["bytes_freed"] == pair["size"] and QuarantineEntry.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/api/v1/quarantine/purge/", {}, format="json")
    assert resp.status_code == 202 and Job.objects.get(pk=resp.json()["id"]).result["bytes_freed"] == pair["size"]
    assert not LocalFile.objects.filter(pk=pair["c"].pk).exists()


@pytest.mark.parametrize("body", [
    {"action": "hardlink", "group": "{bob}"},
    {"action": "quarantine", "file_ids": ["{bob}"]},
    {"action": "quarantine", "file_ids": ["{mine}", "{bob}"]},
    {"action": "hardlink", "keeper_id": "{bob}", "file_ids": ["{mine}"]},
    {"action": "hardlink", "keeper_id": "{mine}", "file_ids": ["{bob}"]},
])
def test_another_users_files_are_404_and_nothing_is_queued(pair, user, other_user, model_root, body):
    bob_copy = model_root / "old" / "bobs.safetensors"
    bob_copy.write_bytes(pair["keeper"].read_bytes())
    bob2 = model_root / "old" / "bobs2.safetensors"
    bob2.write_bytes(pair["keeper"].read_bytes())
    bob, _ = register_and_hash(other_user, bob_copy, bob2)
    ids = {"{bob}": bob.pk, "{mine}": pair["c"].pk}
    body = {k: (ids.get(v, v) if not isinstance(v, list) else [ids[x] for x in v]) for k, v in body.items()}
    resp = token_client(user).post(URL, body, format="json")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    assert "bobs" not in resp.content.decode() and not Job.objects.exists()
    assert os.stat(bob_copy).st_ino == bob.inode and bob_copy.exists()


def test_another_users_quarantine_is_invisible_and_untouchable(pair, user, other_user):
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    bob = token_client(other_user)
    assert bob.get("/api/v1/quarantine/").json()["results"] == []
    for url in ("/api/v1/quarantine/restore/", "/api/v1/quarantine/purge/"):
        resp = bob.post(url, {"entry_ids": [entry.pk]}, format="json")
        assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    # Purging "all of mine" as Bob deletes none of Alice's.
    resp = bob.post("/api/v1/quarantine/purge/", {}, format="json")
    assert resp.status_code == 202 and os.path.exists(entry.quarantine_path) and QuarantineEntry.objects.exists()


@pytest.mark.parametrize("body,field", [
    ({"action": "delete", "group": 1}, "action"),
    ({"action": "hardlink"}, None),
    ({"action": "hardlink", "group": 1, "file_ids": [2]}, None),
    ({"action": "hardlink", "file_ids": [2]}, "keeper_id"),
    ({"action": "quarantine", "file_ids": []}, "file_ids"),
    ({"action": "quarantine", "file_ids": [2**70]}, "file_ids"),
])
def test_bad_requests_answer_in_the_error_format(user, body, field):
    resp = token_client(user).post(URL, body, format="json")
    assert resp.status_code == 400
    error = error_of(resp)
    assert error["code"] == "invalid_input" and (field is None or field in error["detail"])


def test_a_group_without_exact_copies_is_nothing_to_do(user, model_root, sent_for_hashing):
    from tests.model_builders import write_safetensors

    lonely = register_and_hash(user, write_safetensors(model_root / "one.safetensors"))[0]
    resp = token_client(user).post(URL, {"action": "hardlink", "group": lonely.pk}, format="json")
    assert resp.status_code == 404 and "no duplicate group" in error_of(resp)["message"]


def test_session_auth_needs_csrf_for_actions(pair, user):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    for url, body in ((URL, {"action": "hardlink", "group": pair["k"].pk}), ("/api/v1/quarantine/purge/", {})):
        resp = browser.post(url, body, format="json")
        assert resp.status_code == 403 and "CSRF" in error_of(resp)["message"]
    assert not Job.objects.exists()
