"""Duplicate actions at the service level: hard links, quarantine, restore, purge; what each refuses."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from models_catalog.models import Job, LocalFile, QuarantineEntry
from models_catalog.services import file_actions
from models_catalog.services.duplicates import duplicate_groups
from models_catalog.services.file_action_jobs import file_action_job_create
from models_catalog.services.file_actions import hardlink_copies, purge_quarantine, quarantine_files, restore_files
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors
from tests.factories import DUPLICATE_PAYLOAD as PAYLOAD, register_and_hash  # noqa: F401
from workers import file_ops

pytestmark = pytest.mark.django_db



def test_hardlink_rehashes_both_then_links_atomically_and_frees_the_copy(pair, user, monkeypatch, sent_for_hashing):
    events = []
    real_hash, real_replace = file_actions.hash_file_and_identity, os.replace

    def hashing(path, *args, **kwargs):
        assert kwargs.get("follow_symlinks") is False
        events.append(("hash", str(path)))
        return real_hash(path, *args, **kwargs)

    def replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        # At the moment of the rename the copy is still there (old inode) and the link beside it.
        assert os.stat(dst, dir_fd=dst_dir_fd).st_ino == pair["c"].inode
        assert os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False).st_ino == pair["k"].inode
        assert src_dir_fd == dst_dir_fd and src.startswith(".model-copy.safetensors.mxr-link-")
        events.append(("replace", dst))
        return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(file_actions, "hash_file_and_identity", hashing)
    monkeypatch.setattr(os, "replace", replace)
    report = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False)
    monkeypatch.undo()

    [item] = report.items
    assert item.outcome == "done", item.reason
    assert events == [("hash", str(pair["keeper"])), ("hash", str(pair["copy"])), ("replace", "model-copy.safetensors")]
    k_st, c_st = os.stat(pair["keeper"]), os.stat(pair["copy"])
    assert (c_st.st_dev, c_st.st_ino) == (k_st.st_dev, k_st.st_ino) and k_st.st_nlink == 2
    assert pair["copy"].read_bytes() == pair["keeper"].read_bytes()
    assert report.bytes_freed == item.bytes_freed == pair["size"]
    assert not [n for n in os.listdir(pair["copy"].parent) if ".mxr-" in n]  # no temporary left behind
    c = LocalFile.objects.get(pk=pair["c"].pk)
    assert (c.device, c.inode, c.size, c.mtime_ns) == (k_st.st_dev, k_st.st_ino, k_st.st_size, k_st.st_mtime_ns)
    assert c.status == "done" and c.hashes.sha256 == hashlib.sha256(pair["copy"].read_bytes()).hexdigest()
    # The next register sees both unchanged: nothing is hashed again.
    outcome = local_file_register(paths=[str(pair["keeper"].parent.parent)], owner=user)
    assert {lf.pk for lf in outcome.unchanged} == {pair["k"].pk, pair["c"].pk} and outcome.queued == []


def test_linked_copies_are_skipped_as_already_the_same_file(pair, user):
    hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "already the same file" in item.reason


def test_hardlink_dry_run_changes_nothing_and_reads_nothing(pair, user, monkeypatch):
    monkeypatch.setattr(file_actions, "hash_file_and_identity", lambda *a, **k: pytest.fail("a dry run read a file"))
    report = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=True)
    [item] = report.items
    assert item.outcome == "planned" and report.bytes_freed == pair["size"] and "would" in report.summary()
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode != pair["k"].inode
    assert LocalFile.objects.get(pk=pair["c"].pk).inode == pair["c"].inode


def test_a_copy_with_other_hard_links_frees_nothing_and_says_so(pair, user):
    os.link(pair["copy"], pair["copy"].with_name("third-name.safetensors"))
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=True).items
    assert item.outcome == "planned" and item.bytes_freed == 0 and "other hard link" in item.reason


def _untouched(pair):
    assert os.stat(pair["copy"], follow_symlinks=False).st_ino == pair["c"].inode or os.path.islink(pair["copy"])
    assert pair["keeper"].read_bytes()[-len(PAYLOAD):] == PAYLOAD


def test_hardlink_refuses_files_outside_the_roots(pair, user, settings):
    settings.MODEL_ROOTS = [pair["keeper"].parent]  # the copy's folder is no longer a root of hers
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "no longer allowed" in item.reason and "outside the model roots" in item.reason
    _untouched(pair)


def test_hardlink_refuses_another_users_files_either_way(pair, user, other_user, model_root):
    bob_copy = model_root / "old" / "bobs.safetensors"
    bob_copy.write_bytes(pair["keeper"].read_bytes())
    [bob] = register_and_hash(other_user, bob_copy)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[bob.pk], dry_run=False).items
    assert item.outcome == "skipped" and item.reason == file_actions.NOT_YOURS and item.path == "" and item.name == ""
    [item] = hardlink_copies(owner=user, keeper_id=bob.pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "keeper cannot be used" in item.reason
    assert os.stat(bob_copy).st_ino == bob.inode and os.stat(pair["copy"]).st_ino == pair["c"].inode


def test_hardlink_refuses_to_cross_filesystems(pair, user, monkeypatch):
    monkeypatch.setattr(file_ops, "same_filesystem", lambda a, b: False)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "another filesystem" in item.reason
    _untouched(pair)


def test_hardlink_refuses_a_symlinked_final_component(pair, user, tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(pair["copy"].read_bytes())
    pair["copy"].unlink()
    pair["copy"].symlink_to(outside)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "symbolic link" in item.reason
    assert os.path.islink(pair["copy"]) and os.stat(outside).st_nlink == 1


def test_hardlink_refuses_a_folder_on_the_way_swapped_for_a_link(pair, user, model_root):
    real = model_root / "old-real"
    pair["copy"].parent.rename(real)
    pair["copy"].parent.symlink_to(real)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "leads elsewhere" in item.reason
    assert os.stat(real / pair["copy"].name).st_ino == pair["c"].inode


def test_a_copy_changed_since_it_was_hashed_is_skipped_with_the_reason(pair, user):
    with open(pair["copy"], "ab") as f:
        f.write(b"more")
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "changed since it was hashed" in item.reason and "size" in item.reason


def test_a_copy_rewritten_with_the_same_size_and_mtime_is_caught_by_the_new_hash(pair, user):
    data = bytearray(pair["copy"].read_bytes())
    data[-1] ^= 0xFF
    pair["copy"].write_bytes(bytes(data))
    os.utime(pair["copy"], ns=(pair["c"].mtime_ns, pair["c"].mtime_ns))
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "SHA256 now differs" in item.reason
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode and pair["copy"].read_bytes() == bytes(data)


def test_a_keeper_changed_in_place_links_nothing(pair, user):
    data = bytearray(pair["keeper"].read_bytes())
    data[-1] ^= 0xFF
    pair["keeper"].write_bytes(bytes(data))
    os.utime(pair["keeper"], ns=(pair["k"].mtime_ns, pair["k"].mtime_ns))
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "keeper cannot be used" in item.reason
    assert os.stat(pair["copy"]).st_ino == pair["c"].inode


def test_a_different_file_is_not_linked(pair, user, model_root):
    other = write_safetensors(model_root / "old" / "other.safetensors", payload=b"\x07" * 64)
    [o] = register_and_hash(user, other)
    [item] = hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[o.pk], dry_run=False).items
    assert item.outcome == "skipped" and "SHA256 differs" in item.reason


def test_uploads_are_not_acted_on(pair, user, settings):
    up = settings.UPLOAD_DIR / "x" / "up.safetensors"
    up.parent.mkdir(parents=True)
    up.write_bytes(pair["keeper"].read_bytes())
    lf = LocalFile.objects.create(owner=user, origin="uploaded", path=str(up), name="up.safetensors", status="done")
    [item] = quarantine_files(owner=user, file_ids=[lf.pk], dry_run=False).items
    assert item.outcome == "skipped" and "uploaded" in item.reason and up.exists()


# --- quarantine, restore, purge -------------------------------------------------------------


def test_quarantine_keeps_the_relative_path_then_restore_undoes_it(pair, user, model_root, settings):
    report = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    [item] = report.items
    assert item.outcome == "done", item.reason
    dest = settings.DATA_DIR / "quarantine" / str(user.pk)
    [label] = os.listdir(dest)
    assert label.startswith("models-")
    moved = dest / label / "old" / "model-copy.safetensors"
    assert item.target == str(moved) and moved.exists() and not pair["copy"].exists()
    assert os.stat(moved).st_ino == pair["c"].inode  # a rename: same filesystem
    assert report.bytes_on_purge == pair["size"] and report.bytes_freed == 0
    c = LocalFile.objects.get(pk=pair["c"].pk)
    assert c.path == str(moved) and c.quarantined_at is not None and c.status == "done" and c.has_engine_hashes
    entry = QuarantineEntry.objects.get(local_file=c)
    assert (entry.owner, entry.original_path, entry.quarantine_path, entry.size, entry.moved_by) == (
        user, str(pair["copy"]), str(moved), pair["size"], "rename")
    assert [m.id for g in duplicate_groups(owner=user) for m in g.members] == []  # no longer a group

    [item] = restore_files(owner=user, entry_ids=[entry.pk]).items
    assert item.outcome == "done", item.reason
    assert pair["copy"].exists() and not moved.exists() and os.stat(pair["copy"]).st_ino == pair["c"].inode
    assert not (dest / label).exists()  # emptied folders are removed
    c.refresh_from_db()
    assert c.path == str(pair["copy"]) and c.quarantined_at is None and not QuarantineEntry.objects.exists()
    assert {m.id for g in duplicate_groups(owner=user) for m in g.members} == {pair["k"].pk, pair["c"].pk}
    outcome = local_file_register(paths=[str(pair["copy"])], owner=user)
    assert [lf.pk for lf in outcome.unchanged] == [c.pk] and outcome.queued == []


def test_quarantine_dry_run_changes_nothing(pair, user, settings):
    report = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=True)
    [item] = report.items
    assert item.outcome == "planned" and "rename" in item.reason and item.bytes_on_purge == pair["size"]
    assert pair["copy"].exists() and not (settings.DATA_DIR / "quarantine").exists()
    assert LocalFile.objects.get(pk=pair["c"].pk).quarantined_at is None and not QuarantineEntry.objects.exists()


def test_restore_refuses_when_something_is_at_the_original_path(pair, user):
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    pair["copy"].write_bytes(b"a new file in its place")
    entry = QuarantineEntry.objects.get()
    [item] = restore_files(owner=user, entry_ids=[entry.pk]).items
    assert item.outcome == "skipped" and "something is at" in item.reason
    assert pair["copy"].read_bytes() == b"a new file in its place" and QuarantineEntry.objects.exists()


def test_restore_makes_the_folder_again_and_refuses_another_users_entry(pair, user, other_user):
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    pair["copy"].parent.rmdir()
    entry = QuarantineEntry.objects.get()
    [item] = restore_files(owner=other_user, entry_ids=[entry.pk]).items
    assert item.outcome == "skipped" and item.reason == file_actions.NOT_YOUR_ENTRY and item.path == ""
    [item] = restore_files(owner=user, entry_ids=[entry.pk]).items
    assert item.outcome == "done" and pair["copy"].exists()


def test_purge_deletes_for_good_and_reports_the_bytes_freed(pair, user):
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    moved = entry.quarantine_path
    dry = purge_quarantine(owner=user, dry_run=True)
    assert [i.outcome for i in dry.items] == ["planned"] and dry.bytes_freed == pair["size"] and os.path.exists(moved)
    assert f"an exact copy stays at {pair['keeper']}" in dry.items[0].reason
    report = purge_quarantine(owner=user, entry_ids=[entry.pk], dry_run=False)
    [item] = report.items
    assert item.outcome == "done" and report.bytes_freed == pair["size"] and "freed" in report.summary()
    assert not os.path.exists(moved) and not LocalFile.objects.filter(pk=pair["c"].pk).exists()
    assert not QuarantineEntry.objects.exists() and pair["keeper"].exists()


def test_purge_of_a_file_hard_linked_elsewhere_frees_nothing(pair, user):
    hardlink_copies(owner=user, keeper_id=pair["k"].pk, copy_ids=[pair["c"].pk], dry_run=False)
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    report = purge_quarantine(owner=user, dry_run=False)
    assert report.items[0].outcome == "done" and report.bytes_freed == 0 and "other hard link" in report.items[0].reason


def test_purge_leaves_a_file_swapped_in_quarantine(pair, user):
    quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    entry = QuarantineEntry.objects.get()
    os.unlink(entry.quarantine_path)
    with open(entry.quarantine_path, "wb") as f:
        f.write(b"someone else's")
    [item] = purge_quarantine(owner=user, dry_run=False).items
    assert item.outcome == "skipped" and "changed in quarantine" in item.reason and os.path.exists(entry.quarantine_path)


def test_quarantine_across_filesystems_copies_fsyncs_then_deletes_and_says_so(pair, user, monkeypatch):
    monkeypatch.setattr(file_ops, "same_filesystem", lambda a, b: False)
    data, mtime = pair["copy"].read_bytes(), pair["c"].mtime_ns
    plan = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=True)
    assert "copied, then deleted" in plan.items[0].reason and "MODELXREF_QUARANTINE_DIR" in plan.notes[0]
    report = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False)
    [item] = report.items
    assert item.outcome == "done" and "copied" in item.reason and report.notes
    entry = QuarantineEntry.objects.get()
    st = os.stat(entry.quarantine_path)
    assert entry.moved_by == "copy" and not pair["copy"].exists() and st.st_ino != pair["c"].inode
    assert Path(entry.quarantine_path).read_bytes() == data and st.st_mtime_ns == mtime
    c = LocalFile.objects.get(pk=pair["c"].pk)
    assert (c.inode, c.mtime_ns) == (st.st_ino, mtime)
    [item] = restore_files(owner=user, entry_ids=[entry.pk]).items
    assert item.outcome == "done" and pair["copy"].read_bytes() == data


def test_a_quarantine_folder_inside_each_root_is_a_rename_and_is_never_registered(pair, user, model_root, settings):
    settings.QUARANTINE_DIR = ".modelxref-quarantine"
    [item] = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False).items
    moved = model_root / ".modelxref-quarantine" / str(user.pk) / "old" / "model-copy.safetensors"
    assert item.outcome == "done" and item.target == str(moved) and moved.exists()
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert str(moved) not in {lf.path for lf in outcome.queued}
    refused = local_file_register(paths=[str(moved)], owner=user).refused
    assert refused and "quarantine" in refused[0][1]


def test_a_symlink_planted_in_an_in_root_quarantine_folder_is_not_followed(pair, user, model_root, settings, tmp_path):
    settings.QUARANTINE_DIR = ".modelxref-quarantine"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (model_root / ".modelxref-quarantine").mkdir()
    (model_root / ".modelxref-quarantine" / str(user.pk)).symlink_to(elsewhere)
    [item] = quarantine_files(owner=user, file_ids=[pair["c"].pk], dry_run=False).items
    assert item.outcome == "skipped" and "symbolic link" in item.reason
    assert pair["copy"].exists() and os.listdir(elsewhere) == []


def test_actions_run_as_jobs_with_a_log(pair, user):
    job = file_action_job_create(owner=user, kind="hardlink", dry_run=False, inline=True,
                                 params={"keeper_id": pair["k"].pk, "copy_ids": [pair["c"].pk, 999999]})
    job.refresh_from_db()
    assert job.kind == Job.Kind.HARDLINK and job.status == "done" and job.is_file_action
    assert job.params == {"keeper_id": pair["k"].pk, "copy_ids": [pair["c"].pk, 999999], "dry_run": False}
    assert [(i["file_id"], i["outcome"]) for i in job.result["items"]] == [(pair["c"].pk, "done"), (999999, "skipped")]
    assert job.result["bytes_freed"] == pair["size"] and "1 skipped" in job.message
    assert job.progress_done == job.progress_total == 2
