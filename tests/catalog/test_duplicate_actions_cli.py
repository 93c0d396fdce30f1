"""`manage.py duplicates --apply hardlink|quarantine` and `manage.py quarantine list|restore|purge`."""
from __future__ import annotations

import io
import json
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from models_catalog.models import Job, LocalFile, QuarantineEntry
from tests.factories import register_and_hash  # noqa: F401

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_dry_run_prints_the_plan_and_changes_nothing(pair):
    text = run("duplicates", "--apply", "hardlink", "--dry-run", "--user", "alice")
    assert f"keep {pair['keeper']}" in text and str(pair["copy"]) in text and "would" in text
    assert "1 file(s) would be replaced by hard links" in text
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode and not Job.objects.exists()


def test_without_yes_and_without_a_terminal_it_refuses(pair):
    with pytest.raises(CommandError, match="pass --yes"):
        run("duplicates", "--apply", "hardlink", "--user", "alice")
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode and not Job.objects.exists()


@pytest.mark.parametrize("answer,linked", [("y\n", True), ("n\n", False), ("\n", False)])
def test_on_a_terminal_it_asks_first(pair, monkeypatch, answer, linked):
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    text = run("duplicates", "--apply", "hardlink", "--user", "alice")
    assert (os.stat(pair["copy"]).st_ino == pair["k"].inode) is linked
    assert ("freed" in text.splitlines()[-1]) is linked and ("nothing was changed" in text) is not linked


def test_yes_applies_the_plan_as_a_job(pair):
    text = run("duplicates", "--apply", "hardlink", "--yes", "--user", "alice")
    assert os.stat(pair["copy"]).st_ino == pair["k"].inode
    job = Job.objects.get()
    assert job.kind == "hardlink" and job.status == "done" and job.owner.username == "alice"
    assert job.params["keeper_id"] == pair["k"].pk and job.params["copy_ids"] == [pair["c"].pk]
    assert f"job {job.pk}" in text and "replaced by a hard link" in text


def test_apply_refuses_all_users_and_flags_without_apply(pair):
    with pytest.raises(CommandError, match="--user instead"):
        run("duplicates", "--apply", "quarantine", "--all-users", "--yes")
    with pytest.raises(CommandError, match="go with --apply"):
        run("duplicates", "--dry-run")


def test_apply_json_dry_run_is_the_plan(pair):
    [plan] = json.loads(run("duplicates", "--apply", "quarantine", "--dry-run", "--json", "--user", "alice"))
    assert plan["action"] == "quarantine" and plan["dry_run"] and [i["file_id"] for i in plan["items"]] == [pair["c"].pk]


def test_quarantine_then_list_restore_and_purge(pair):
    run("duplicates", "--apply", "quarantine", "--yes", "--user", "alice")
    entry = QuarantineEntry.objects.get()
    assert not pair["copy"].exists()
    listed = run("quarantine", "list", "--user", "alice")
    assert str(pair["copy"]) in listed and entry.quarantine_path in listed and "1 file(s)" in listed
    assert json.loads(run("quarantine", "list", "--json", "--user", "alice"))[0]["id"] == entry.pk

    text = run("quarantine", "restore", str(entry.pk), "--user", "alice")
    assert pair["copy"].exists() and "restored" in text and not QuarantineEntry.objects.exists()

    run("duplicates", "--apply", "quarantine", "--yes", "--user", "alice")
    with pytest.raises(CommandError, match="pass --yes"):
        run("quarantine", "purge", "--user", "alice")
    plan = run("quarantine", "purge", "--dry-run", "--user", "alice")
    assert "would be deleted for good" in plan and QuarantineEntry.objects.count() == 1
    text = run("quarantine", "purge", "--yes", "--user", "alice")
    assert "deleted for good" in text and "freed" in text
    assert not QuarantineEntry.objects.exists() and not LocalFile.objects.filter(pk=pair["c"].pk).exists()
    assert run("quarantine", "list", "--user", "alice").strip() == "the quarantine is empty"


def test_nothing_to_do_is_said(user):
    assert "nothing to do" in run("duplicates", "--apply", "hardlink", "--yes", "--user", "alice")
