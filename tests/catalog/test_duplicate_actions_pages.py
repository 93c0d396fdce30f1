"""The web side of the duplicate actions: the plan first, nothing without an explicit POST with CSRF."""
from __future__ import annotations

import os

import pytest
from django.test import Client

from models_catalog.models import Job, LocalFile, QuarantineEntry
from models_catalog.services.file_actions import quarantine_files
from tests.factories import register_and_hash  # noqa: F401
from tests.factories import login, page  # noqa: F401

pytestmark = pytest.mark.django_db

HARDLINK = "/duplicates/actions/hardlink/"


def test_each_group_offers_the_actions_which_open_the_plan(pair, user):
    html = page(login(user), "/duplicates/")
    assert f'{HARDLINK}?group={pair["k"].pk}&amp;prefer=lossless' in html
    assert f'/duplicates/actions/quarantine/?group={pair["k"].pk}' in html and "/quarantine/" in html


def test_the_confirm_page_shows_the_plan_and_changes_nothing(pair, user):
    html = page(login(user), HARDLINK, group=pair["k"].pk)
    assert str(pair["copy"]) in html and "would be done" in html and f"Keeper: {pair['keeper']}" in html
    assert 'name="confirm" value="yes"' in html and 'name="file_ids" value="%d"' % pair["c"].pk in html
    assert "csrfmiddlewaretoken" in html
    assert not Job.objects.exists() and os.stat(pair["copy"]).st_ino == pair["c"].inode


def test_posting_without_the_csrf_token_is_refused(pair, user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    resp = browser.post(HARDLINK, {"confirm": "yes", "file_ids": [pair["c"].pk], "keeper_id": pair["k"].pk})
    assert resp.status_code == 403 and not Job.objects.exists()
    resp = browser.post("/quarantine/purge/", {"confirm": "yes", "entry_ids": [1]})
    assert resp.status_code == 403


def test_a_post_without_the_confirmation_does_nothing(pair, user):
    resp = login(user).post(HARDLINK, {"file_ids": [pair["c"].pk], "keeper_id": pair["k"].pk})
    assert resp.status_code == 302 and not Job.objects.exists()


def test_confirming_starts_the_job_and_its_page_shows_the_log(pair, user, eager_celery,
                                                             django_capture_on_commit_callbacks):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get(HARDLINK, {"group": pair["k"].pk})
    token = browser.cookies["csrftoken"].value
    with django_capture_on_commit_callbacks(execute=True):
        resp = browser.post(HARDLINK, {"confirm": "yes", "file_ids": [pair["c"].pk], "keeper_id": pair["k"].pk,
                                       "csrfmiddlewaretoken": token})
    job = Job.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/actions/jobs/{job.pk}/"
    assert os.stat(pair["copy"]).st_ino == pair["k"].inode
    html = page(browser, resp["Location"])
    assert "replaced by a hard link to the keeper" in html and "st-done" in html and str(pair["copy"]) in html
    assert "hx-trigger" not in html  # finished: no more polling


def test_another_users_group_files_entries_and_jobs_are_404(pair, user, other_user):
    bob = login(other_user)
    assert bob.get(HARDLINK, {"group": pair["k"].pk}).status_code == 404
    assert bob.post(HARDLINK, {"confirm": "yes", "file_ids": [pair["c"].pk], "keeper_id": pair["k"].pk}).status_code == 404
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    assert bob.get("/quarantine/restore/", {"entry": entry.pk}).status_code == 404
    assert bob.post("/quarantine/purge/", {"confirm": "yes", "entry_ids": [entry.pk]}).status_code == 404
    assert str(pair["copy"]) not in page(bob, "/quarantine/")
    job = Job.objects.create(owner=user, kind="purge", params={"entry_ids": None, "dry_run": True})
    assert bob.get(f"/actions/jobs/{job.pk}/").status_code == 404
    assert not Job.objects.filter(owner=other_user).exists() and os.path.exists(entry.quarantine_path)


def test_garbage_ids_are_404_not_errors(user):
    alice = login(user)
    assert alice.get(HARDLINK, {"group": "x"}).status_code == 404
    assert alice.get(HARDLINK).status_code == 404
    assert alice.get("/duplicates/actions/delete-everything/", {"group": 1}).status_code == 404
    assert alice.post("/quarantine/restore/", {"confirm": "yes", "entry_ids": ["9" * 30]}).status_code == 404


def test_quarantine_page_restore_and_purge_after_their_plans(pair, user, eager_celery,
                                                           django_capture_on_commit_callbacks):
    alice = login(user)
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    html = page(alice, "/quarantine/")
    assert str(pair["copy"]) in html and entry.quarantine_path in html and f'value="{entry.pk}"' in html
    assert "quarantined" in page(alice, "/") and "In quarantine" in page(alice, f"/files/{pair['c'].pk}/")

    plan = page(alice, "/quarantine/restore/", entry=entry.pk)
    assert "would be put back where it was" in plan and QuarantineEntry.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        alice.post("/quarantine/restore/", {"confirm": "yes", "entry_ids": [entry.pk]})
    assert pair["copy"].exists() and not QuarantineEntry.objects.exists()

    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    plan = page(alice, "/quarantine/purge/", all="1")
    assert "would be deleted for good" in plan and "an exact copy stays" in plan and os.path.exists(entry.quarantine_path)
    with django_capture_on_commit_callbacks(execute=True):
        resp = alice.post("/quarantine/purge/", {"confirm": "yes", "entry_ids": [entry.pk]})
    assert "deleted for good" in page(alice, resp["Location"])
    assert not os.path.exists(entry.quarantine_path) and not LocalFile.objects.filter(pk=pair["c"].pk).exists()


def test_an_empty_choice_goes_back_with_a_message(user):
    resp = login(user).get("/quarantine/restore/")
    assert resp.status_code == 302 and resp["Location"] == "/quarantine/"


def test_a_quarantined_file_cannot_be_forgotten_only_restored_or_purged(pair, user):
    from tests.factories import token_client  # noqa: F401

    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    alice = login(user)
    assert "Forget this file" not in page(alice, f"/files/{pair['c'].pk}/")
    resp = alice.post(f"/files/{pair['c'].pk}/forget/")
    assert resp.status_code == 302 and LocalFile.objects.filter(pk=pair["c"].pk).exists()
    resp = token_client(user).delete(f"/api/v1/files/{pair['c'].pk}/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "in_quarantine"
    assert LocalFile.objects.filter(pk=pair["c"].pk).exists() and QuarantineEntry.objects.exists()
