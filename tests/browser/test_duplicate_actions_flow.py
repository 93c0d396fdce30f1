"""Duplicate actions in headless Chromium: a group's button, the plan, the confirmation, the job's log,
then the quarantine and back."""
from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from models_catalog.models import LocalFile
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.register import local_file_register
from tests.browser.conftest import write_model

pytestmark = pytest.mark.browser


def test_hard_link_then_quarantine_and_restore_from_the_pages(signed_in_page, web_user, browser_data, eager_celery,
                                                              monkeypatch, settings, shot, tmp_path, page_log):
    root = tmp_path / "models"
    (root / "keep").mkdir(parents=True)
    (root / "downloads").mkdir()
    keeper = write_model(root / "keep" / "style.safetensors", seed=11, rank=4)
    copy = root / "downloads" / "style (1).safetensors"
    copy.write_bytes(keeper.read_bytes())
    third = root / "downloads" / "style-again.safetensors"
    third.write_bytes(keeper.read_bytes())
    settings.MODEL_ROOTS = [root]
    monkeypatch.setattr("models_catalog.services.register.enqueue_hashing_many", lambda *, local_files: None)
    for lf in local_file_register(paths=[str(root)], owner=web_user).queued:
        local_file_hash(local_file_id=lf.pk)

    page = signed_in_page()
    page.goto("/duplicates/")
    shot(page, "00-duplicates")
    page.get_by_role("link", name="Replace exact copies with hard links…").click()
    expect(page.get_by_role("heading", name="Replace exact copies with hard links")).to_be_visible()
    expect(page.locator("table.action-items")).to_contain_text("style (1).safetensors")
    expect(page.locator("table.action-items")).to_contain_text("would be done")
    shot(page, "01-plan")
    assert os.stat(copy).st_ino != os.stat(keeper).st_ino  # the plan changed nothing
    page.get_by_role("button", name="Replace 2 files with hard links").click()
    expect(page).to_have_url(re.compile(r"/actions/jobs/\d+/$"))
    expect(page.locator("#job-status")).to_contain_text("replaced by a hard link to the keeper")
    shot(page, "02-done")
    assert os.stat(copy).st_ino == os.stat(third).st_ino == os.stat(keeper).st_ino

    page.goto("/duplicates/")  # hard links now: "same file", nothing to free, no actions offered
    expect(page.locator("table.dups")).to_contain_text("same file")
    expect(page.locator("table.dups")).to_contain_text("frees nothing")
    expect(page.get_by_role("link", name="Move exact copies into quarantine…")).to_have_count(0)

    fourth = root / "downloads" / "style (2).safetensors"
    fourth.write_bytes(keeper.read_bytes())
    for lf in local_file_register(paths=[str(fourth)], owner=web_user).queued:
        local_file_hash(local_file_id=lf.pk)
    page.goto("/duplicates/")
    page.get_by_role("link", name="Move exact copies into quarantine…").click()
    page.get_by_role("button", name="Move 1 file into quarantine").click()
    expect(page.locator("#job-status")).to_contain_text("moved into quarantine")
    page.get_by_role("link", name="Open the quarantine").click()
    shot(page, "03-quarantine")
    page.get_by_label("Choose style (2).safetensors").check()
    page.get_by_role("button", name="Restore the chosen files…").click()
    expect(page.locator("table.action-items")).to_contain_text("would be put back where it was")
    page.get_by_role("button", name="Restore 1 file").click()
    expect(page.locator("#job-status")).to_contain_text("put back where it was")
    assert fourth.exists() and os.stat(fourth).st_ino != os.stat(keeper).st_ino
    assert LocalFile.objects.get(name="style (2).safetensors").quarantined_at is None
    assert page_log.errors == [] and page_log.bad_responses == []
