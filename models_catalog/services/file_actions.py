"""Duplicate actions that reclaim space and lose nothing: replace exact copies with hard links to
their keeper, move files into quarantine and back, delete quarantined files for good.

Rules every action keeps (SECURITY.md, "Paths"):

- Only the requesting user's own files (staff too: nobody acts on someone else's files), and only
  files registered in place, under that user's model roots *now*. Uploaded files live in ModelXRef's
  data dir and pushed files are hashes of files on another machine: both are skipped with the reason.
- Every path is checked again when the action runs, as the hashing stage does
  (`hashing.registered_path_problem`: lstat, no symlink as the final component, still under the roots,
  nothing on the way replaced by a link, the same device and inode as registered), and it must still
  be the file that was hashed (same size and mtime). A file that changed since is skipped, with how.
- The change itself goes through workers/file_ops.py: folders opened component by component without
  following a link, the final name changed through that descriptor, nothing replaced that was not
  checked just before.
- A hard link is made only after both files were hashed again (full SHA-256 of their current bytes,
  the hashing engine without its cache) and both agree with each other and with the stored SHA256.
- A dry run makes every check that reads no file content and says what would happen and the bytes it
  would free; nothing on disk or in the database changes.

Each action returns an ActionReport: every file done / planned / skipped with the reason in words,
and the bytes freed. services/file_action_jobs.py runs them as Jobs (progress, the log).
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from models_catalog.models import FileHashes, LocalFile, QuarantineEntry
from models_catalog.services.hashing import hash_cache, registered_path_problem
from models_catalog.services.paths import describe_special, model_roots, model_roots_for
from workers import file_ops
from workers.file_ops import FileOpError, identity_change, lstat_at
from workers.hashing import FileIdentity, HashingError, hash_file_and_identity

log = logging.getLogger(__name__)

DONE, PLANNED, SKIPPED = "done", "planned", "skipped"

NOT_YOURS = "not one of your files (or no such file)"
NOT_YOUR_ENTRY = "not one of your quarantined files (or no such entry)"
UPLOADED = ("uploaded: it lives in ModelXRef's data dir, not under your model roots; actions only change files "
            "registered in place (forget the upload instead)")
PUSHED = "pushed from another machine: only its hashes are here, the file is not on this server"
FOLDER = "a folder (e.g. diffusers): actions link or move single files only"

# (done, total, what is happening, the items so far): how a job follows an action.
Progress = Callable[[int, int, str, list], None]


@dataclass
class ActionItem:
    outcome: str  # done | planned (a dry run: what would be done) | skipped
    reason: str  # what was (or would be) done, or why not, in words
    file_id: int | None = None
    entry_id: int | None = None
    name: str = ""
    path: str = ""
    target: str = ""  # the keeper (hardlink), where it goes (quarantine, restore)
    bytes_freed: int = 0  # on disk, by this action (a dry run: that it would free)
    bytes_on_purge: int = 0  # quarantine: what purging it later frees


@dataclass
class ActionReport:
    action: str  # hardlink | quarantine | restore | purge
    dry_run: bool
    items: list[ActionItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for i in self.items if i.outcome == outcome)

    @property
    def bytes_freed(self) -> int:
        return sum(i.bytes_freed for i in self.items if i.outcome in (DONE, PLANNED))

    @property
    def bytes_on_purge(self) -> int:
        return sum(i.bytes_on_purge for i in self.items if i.outcome in (DONE, PLANNED))

    def summary(self) -> str:
        n = self.count(PLANNED if self.dry_run else DONE)
        files = f"{n} file{'s' if n != 1 else ''}"
        would = "would be " if self.dry_run else ""
        verb = {"hardlink": f"{files} {would}replaced by hard links to the keeper",
                "quarantine": f"{files} {would}moved into quarantine",
                "restore": f"{files} {would}restored",
                "purge": f"{files} {would}deleted for good"}[self.action]
        parts = [("dry run: " if self.dry_run else "") + verb]
        if self.count(SKIPPED):
            parts.append(f"{self.count(SKIPPED)} skipped")
        if self.action in ("hardlink", "purge"):
            parts.append(f"{filesizeformat(self.bytes_freed)} {'would be ' if self.dry_run else ''}freed")
        elif self.action == "quarantine" and self.bytes_on_purge:
            parts.append(f"{filesizeformat(self.bytes_on_purge)} freed once purged")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {"action": self.action, "dry_run": self.dry_run, "summary": self.summary(),
                "bytes_freed": self.bytes_freed, "bytes_on_purge": self.bytes_on_purge,
                "done": self.count(DONE), "planned": self.count(PLANNED), "skipped": self.count(SKIPPED),
                "notes": self.notes, "items": [asdict(i) for i in self.items]}


@dataclass
class _Checked:
    """A registered file that passed every check at use time, with what it was checked against."""

    lf: LocalFile
    path: Path
    st: os.stat_result
    identity: FileIdentity


def _item(outcome: str, reason: str, lf: LocalFile | None = None, **fields) -> ActionItem:
    if lf is not None:
        fields = {"file_id": lf.pk, "name": lf.name, "path": lf.path, **fields}
    return ActionItem(outcome=outcome, reason=reason, **fields)


def _own_files(owner, ids: list[int]) -> dict[int, LocalFile]:
    rows = LocalFile.objects.filter(owner=owner, pk__in=ids).select_related("hashes").in_bulk()
    for lf in rows.values():
        lf.owner = owner
    return rows


def _stored_sha256(lf: LocalFile) -> str:
    try:
        return lf.hashes.sha256
    except FileHashes.DoesNotExist:
        return ""


def row_identity(lf: LocalFile) -> FileIdentity | None:
    if None in (lf.device, lf.inode, lf.size, lf.mtime_ns):
        return None
    return FileIdentity(device=lf.device, inode=lf.inode, size=lf.size, mtime_ns=lf.mtime_ns)


def _lstat(path: Path) -> os.stat_result | str:
    try:
        return os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return "the file is gone: it was moved or deleted since it was registered"
    except OSError as exc:
        return f"cannot look at it: {exc.strerror or exc}"


def check_registered_file(lf: LocalFile, *, roots: list[Path], need_sha256: bool) -> _Checked | str:
    """The file, checked now; or why an action may not touch it."""
    if lf.origin == LocalFile.Origin.UPLOADED:
        return UPLOADED
    if lf.origin != LocalFile.Origin.REGISTERED or lf.host:
        return PUSHED
    if lf.is_folder:
        return FOLDER
    if lf.quarantined_at is not None:
        return "it is in quarantine (restore it first)"
    if need_sha256:
        if lf.status != LocalFile.Status.DONE or not _stored_sha256(lf):
            return "it has no SHA256 yet: wait until it is hashed"
    elif not lf.is_finished:
        return "it is still being hashed: wait until it is done"
    expected = row_identity(lf)
    if expected is None:
        return "its identity (device, inode, size, mtime) is not recorded: register it again"
    path = Path(lf.path)
    st = _lstat(path)
    if isinstance(st, str):
        return st
    problem = registered_path_problem(lf, path, st, roots=roots)
    if problem:
        return problem
    if not stat.S_ISREG(st.st_mode):
        return describe_special(st.st_mode) or "not a regular file"
    change = identity_change(expected, st)
    if change:
        return f"it changed since it was hashed ({change}): register it again first"
    return _Checked(lf=lf, path=path, st=st, identity=expected)


def _root_of(path: Path, roots: list[Path]) -> Path | None:
    """The most specific of the roots that holds `path`."""
    holding = [r for r in roots if path == r or path.is_relative_to(r)]
    return max(holding, key=lambda r: len(r.parts)) if holding else None


def _tick(progress: Progress | None, done: int, total: int, message: str, report: ActionReport) -> None:
    if progress is not None:
        progress(done, total, message, report.items)


def _freed_words(st: os.stat_result) -> str:
    return "" if st.st_nlink <= 1 else f"; its data stays on disk: {st.st_nlink - 1} other hard link(s) hold it"


def _freed(st: os.stat_result) -> int:
    return st.st_size if st.st_nlink <= 1 else 0


# --- 1. hard links ------------------------------------------------------------------------------


class _KeeperUnusable(Exception):
    """The keeper failed a check: no copy may be linked to it."""


def hardlink_copies(*, owner, keeper_id: int, copy_ids: list[int], dry_run: bool,
                    progress: Progress | None = None) -> ActionReport:
    """Replace each copy with a hard link to the keeper: same bytes, one copy on disk.

    Both files must be the owner's, registered in place under the owner's roots, unchanged since
    hashed and on one filesystem; both are hashed again just before the link and must agree with
    each other and with the stored SHA256. The link is atomic (linked to a temporary name beside the
    copy, then renamed over it), and the copy's row takes the keeper's identity, so the next
    register sees it unchanged and nothing is hashed again. Copies already linked are skipped.
    """
    report = ActionReport(action="hardlink", dry_run=dry_run)
    copy_ids = [i for i in dict.fromkeys(copy_ids) if i != keeper_id]
    rows = _own_files(owner, [keeper_id, *copy_ids])
    roots = model_roots_for(owner)
    keeper = rows.get(keeper_id)
    checked = check_registered_file(keeper, roots=roots, need_sha256=True) if keeper else "it is " + NOT_YOURS
    if isinstance(checked, str):
        for cid in copy_ids:
            report.items.append(_item(SKIPPED, f"the keeper cannot be used: {checked}", rows.get(cid), file_id=cid))
        return report
    keeper_sha = _stored_sha256(checked.lf)
    state = {"keeper_hashed": False}
    pending = list(copy_ids)
    try:
        with file_ops.pinned_parent(checked.path) as (kfd, kname):
            change = identity_change(checked.identity, lstat_at(kfd, kname))
            if change:
                raise _KeeperUnusable(f"it changed while being checked ({change})")
            for n, cid in enumerate(copy_ids):
                _tick(progress, n, len(copy_ids), f"checking file {cid}", report)
                report.items.append(_hardlink_one(
                    lf=rows.get(cid), file_id=cid, keeper=checked, keeper_sha=keeper_sha, keeper_dir=(kfd, kname),
                    roots=roots, dry_run=dry_run, state=state,
                    progress=lambda message, n=n: _tick(progress, n, len(copy_ids), message, report)))
                pending.remove(cid)
    except (_KeeperUnusable, FileOpError) as exc:
        for cid in pending:
            report.items.append(_item(SKIPPED, f"the keeper cannot be used: {exc}", rows.get(cid), file_id=cid))
    _tick(progress, len(copy_ids), len(copy_ids), "finished", report)
    return report


def _hardlink_one(*, lf, file_id, keeper: _Checked, keeper_sha: str, keeper_dir, roots, dry_run: bool, state: dict,
                  progress) -> ActionItem:
    if lf is None:
        return _item(SKIPPED, NOT_YOURS, file_id=file_id)
    target = {"target": keeper.lf.path}
    copy = check_registered_file(lf, roots=roots, need_sha256=True)
    if isinstance(copy, str):
        return _item(SKIPPED, copy, lf, **target)
    if (copy.st.st_dev, copy.st.st_ino) == (keeper.st.st_dev, keeper.st.st_ino):
        return _item(SKIPPED, "already the same file as the keeper (a hard link): nothing to free", lf, **target)
    if _stored_sha256(lf) != keeper_sha:
        return _item(SKIPPED, "not an exact copy of the keeper: its SHA256 differs", lf, **target)
    if not file_ops.same_filesystem(keeper.st, copy.st):
        return _item(SKIPPED, "on another filesystem than the keeper: a hard link cannot cross filesystems", lf, **target)
    freed, freed_words = _freed(copy.st), _freed_words(copy.st)
    if dry_run:
        return _item(PLANNED, f"would be hashed again with the keeper and replaced by a hard link to it{freed_words}",
                     lf, bytes_freed=freed, **target)
    if not state["keeper_hashed"]:
        problem = _rehash_problem(keeper, keeper_sha, progress)
        if problem:
            raise _KeeperUnusable(problem)
        state["keeper_hashed"] = True
    problem = _rehash_problem(copy, keeper_sha, progress)
    if problem:
        return _item(SKIPPED, problem, lf, **target)
    kfd, kname = keeper_dir
    try:
        with file_ops.pinned_parent(copy.path) as (cfd, cname):
            linked = file_ops.hardlink_over(src_dir_fd=kfd, src_name=kname, src_expect=keeper.identity,
                                            dst_dir_fd=cfd, dst_name=cname, dst_expect=copy.identity)
    except FileOpError as exc:
        return _item(SKIPPED, f"not linked: {exc}", lf, **target)
    # The row now names the keeper's inode: the next register finds it unchanged (no re-hash).
    old = copy.identity
    updated = LocalFile.objects.filter(pk=lf.pk, device=old.device, inode=old.inode, size=old.size,
                                       mtime_ns=old.mtime_ns).update(
        device=linked.st_dev, inode=linked.st_ino, size=linked.st_size, mtime_ns=linked.st_mtime_ns)
    reason = f"replaced by a hard link to the keeper{freed_words}"
    if not updated:
        reason += " (its row changed meanwhile: the next register hashes it again)"
    return _item(DONE, reason, lf, bytes_freed=freed, **target)


def _rehash_problem(checked: _Checked, expected_sha: str, progress=None) -> str:
    """Hash the file's current bytes (no cache: the cache would answer from its identity) and say why it
    may not be linked, or ''. The result goes into the cache, which now knows those bytes."""
    def on_bytes(done: int, total: int) -> None:
        if progress is not None and total:
            progress(f"hashing {checked.lf.name}: {done * 100 // total}%")

    try:
        hashes, hashed = hash_file_and_identity(checked.path, on_bytes, follow_symlinks=False)
    except HashingError as exc:
        return f"could not be hashed again: {exc}"
    if hashed != checked.identity:
        return "it changed while being hashed again: left as it is"
    if hashes.sha256 != _stored_sha256(checked.lf):
        return ("its bytes changed since it was hashed (its SHA256 now differs from the stored one, although "
                "size and mtime did not): left as it is; register it again")
    if hashes.sha256 != expected_sha:
        return "its bytes differ from the keeper's: left as it is"
    try:
        hash_cache().put(hashed, hashes)
    except HashingError:
        pass  # only a cache
    return ""


# --- 2. quarantine ------------------------------------------------------------------------------


def quarantine_base(*, root: Path) -> Path:
    """The quarantine folder for files under `root` (settings.QUARANTINE_DIR, see config/settings.py)."""
    setting = settings.QUARANTINE_DIR
    if not setting:
        return Path(settings.DATA_DIR) / "quarantine"
    if os.path.isabs(setting):
        return Path(setting)
    return root / setting  # a hidden folder inside the root: on the root's filesystem


def _root_label(root: Path) -> str:
    # Two roots may hold the same relative path: a folder per root keeps them apart.
    return f"{root.name or 'root'}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def quarantine_destination(*, owner, root: Path, path: Path) -> Path:
    """Where `path` goes: <quarantine>/<owner id>/[<root>/]<its path relative to the root>."""
    base = quarantine_base(root=root)
    owner_dir = base / str(owner.pk)
    relative = path.relative_to(root)
    in_root = base.is_relative_to(root)
    return owner_dir / relative if in_root else owner_dir / _root_label(root) / relative


def quarantine_places() -> list[Path]:
    """Every folder that holds (or may hold) quarantined files, for any user: register refuses paths in them."""
    places = [Path(settings.DATA_DIR) / "quarantine"]
    setting = settings.QUARANTINE_DIR
    if setting and os.path.isabs(setting):
        places.append(Path(setting))
    elif setting:
        places += [root / setting for root in model_roots()]
    return places


def in_quarantine(path: Path, *, places: list[Path] | None = None) -> bool:
    places = quarantine_places() if places is None else places
    return any(path == p or path.is_relative_to(p) for p in places)


def _free_destination(owner, dest: Path) -> Path:
    candidate, n = dest, 1
    while os.path.lexists(candidate) or LocalFile.objects.filter(owner=owner, path=str(candidate)).exists():
        n += 1
        candidate = dest.with_name(f"{dest.stem}~{n}{dest.suffix}")
    return candidate


def _nearest_existing(folder: Path) -> os.stat_result | None:
    for candidate in (folder, *folder.parents):
        try:
            return os.stat(candidate)
        except OSError:
            continue
    return None


class QuarantineRefused(Exception):
    """local_file_quarantine could not move the file; the message says why."""


def local_file_quarantine(*, local_file: LocalFile, owner, reason: str = "") -> ActionItem:
    """Quarantine one file (the converter's --quarantine-original); raises QuarantineRefused with the reason
    when it is skipped. `reason` is why it goes (e.g. "converted to safetensors: ..."), kept in the report."""
    if local_file is None:
        raise QuarantineRefused("the original is not a registered file of yours")
    [item] = quarantine_files(owner=owner, file_ids=[local_file.pk], dry_run=False).items
    if item.outcome != DONE:
        raise QuarantineRefused(f"the original was kept: {item.reason}")
    item.reason = f"{item.reason} ({reason})" if reason else item.reason
    return item


def quarantine_files(*, owner, file_ids: list[int], dry_run: bool, progress: Progress | None = None) -> ActionReport:
    """Move each file into the quarantine folder, keeping its path relative to its model root; its row
    follows it (path and identity updated, marked quarantined, nothing hashed again) and a
    QuarantineEntry remembers where it was. Nothing is freed until it is purged; restore undoes it."""
    report = ActionReport(action="quarantine", dry_run=dry_run)
    ids = list(dict.fromkeys(file_ids))
    rows = _own_files(owner, ids)
    roots = model_roots_for(owner)
    copied = []
    for n, fid in enumerate(ids):
        _tick(progress, n, len(ids), f"checking file {fid}", report)
        lf = rows.get(fid)
        if lf is None:
            report.items.append(_item(SKIPPED, NOT_YOURS, file_id=fid))
            continue
        item = _quarantine_one(lf, owner=owner, roots=roots, dry_run=dry_run, copied=copied)
        report.items.append(item)
    if copied:
        bases = sorted({str(b) for b in copied})
        report.notes.append(
            f"{len(copied)} file(s) are on another filesystem than the quarantine folder ({', '.join(bases)}): "
            "they are copied there (and fsynced), then deleted, instead of renamed. Set MODELXREF_QUARANTINE_DIR "
            "to a folder on their filesystem, or to a hidden name such as .modelxref-quarantine (made inside each "
            "model root), to move them with a rename.")
    _tick(progress, len(ids), len(ids), "finished", report)
    return report


def _quarantine_one(lf: LocalFile, *, owner, roots: list[Path], dry_run: bool, copied: list) -> ActionItem:
    checked = check_registered_file(lf, roots=roots, need_sha256=False)
    if isinstance(checked, str):
        return _item(SKIPPED, checked, lf)
    root = _root_of(checked.path, roots)
    base = quarantine_base(root=root)
    dest = _free_destination(owner, quarantine_destination(owner=owner, root=root, path=checked.path))
    on_purge, freed_words = _freed(checked.st), _freed_words(checked.st)
    if dry_run:
        there = _nearest_existing(dest.parent)
        same_fs = there is not None and file_ops.same_filesystem(checked.st, there)
        if not same_fs:
            copied.append(base)
        how = "a rename: same filesystem" if same_fs else "copied, then deleted: the quarantine folder is on another filesystem"
        return _item(PLANNED, f"would be moved into quarantine ({how}){freed_words}", lf, target=str(dest),
                     bytes_on_purge=on_purge)
    try:
        with file_ops.pinned_parent(checked.path) as (sfd, sname), \
                file_ops.pinned_parent(dest, create_below=base.parent) as (dfd, dname):
            same_fs = file_ops.same_filesystem(checked.st, os.fstat(dfd))
            moved, how = file_ops.move_no_replace(src_dir_fd=sfd, src_name=sname, expect=checked.identity,
                                                  dst_dir_fd=dfd, dst_name=dname, same_fs=same_fs)
    except FileOpError as exc:
        return _item(SKIPPED, f"not moved: {exc}", lf, target=str(dest))
    if how == "copy":
        copied.append(base)
    try:
        with transaction.atomic():
            updated = LocalFile.objects.filter(pk=lf.pk, path=lf.path, quarantined_at__isnull=True).update(
                path=str(dest), device=moved.st_dev, inode=moved.st_ino, size=moved.st_size,
                mtime_ns=moved.st_mtime_ns, quarantined_at=timezone.now())
            if not updated:
                raise _RowChanged()
            QuarantineEntry.objects.create(owner=owner, local_file=lf, original_path=lf.path,
                                           quarantine_path=str(dest), size=moved.st_size, moved_by=how)
    except Exception as exc:
        put_back = _move_back(dest, checked.path, moved)
        if not isinstance(exc, _RowChanged):
            log.exception("quarantine of local file %s: the database write failed", lf.pk)
            if not put_back:
                raise
        return _item(SKIPPED, "its row changed meanwhile: " + ("moved back, nothing changed" if put_back
                                                                 else f"the file is at {dest}"), lf)
    how_words = "renamed" if how == "rename" else "copied to the quarantine folder's filesystem, then deleted here"
    return _item(DONE, f"moved into quarantine ({how_words}){freed_words}", lf, target=str(dest),
                 bytes_on_purge=on_purge)


class _RowChanged(Exception):
    pass


def _move_back(src: Path, dst: Path, st: os.stat_result) -> bool:
    try:
        with file_ops.pinned_parent(src) as (sfd, sname), file_ops.pinned_parent(dst) as (dfd, dname):
            file_ops.move_no_replace(src_dir_fd=sfd, src_name=sname, expect=file_ops.identity_of(st),
                                     dst_dir_fd=dfd, dst_name=dname,
                                     same_fs=file_ops.same_filesystem(st, os.fstat(dfd)))
        return True
    except FileOpError:
        log.warning("could not move %s back to %s", src, dst)
        return False


def _quarantined_owner_dir(path: Path, owner) -> Path:
    """The <quarantine>/<owner id> folder holding `path` (empty folders are removed up to it)."""
    names = {"quarantine"}
    setting = settings.QUARANTINE_DIR
    if setting:
        names.add(Path(setting).name)
    for folder in path.parents:
        if folder.name == str(owner.pk) and folder.parent.name in names:
            return folder
    return path.parent


def _quarantine_place_problem(path: Path, roots: list[Path]) -> str:
    """A quarantined file is changed only inside the data dir, the configured quarantine folder, or the
    owner's roots: nothing escapes them."""
    allowed = [Path(settings.DATA_DIR), *roots]
    if settings.QUARANTINE_DIR and os.path.isabs(settings.QUARANTINE_DIR):
        allowed.append(Path(settings.QUARANTINE_DIR))
    if not any(path.is_relative_to(a) for a in allowed):
        return "its quarantine folder is no longer under your model roots"
    return ""


def _check_quarantined(entry: QuarantineEntry, roots: list[Path]) -> tuple[Path, os.stat_result | None, FileIdentity] | str:
    lf = entry.local_file
    path = Path(lf.path)
    if lf.quarantined_at is None or lf.path != entry.quarantine_path:
        return "its row no longer points into the quarantine folder"
    problem = _quarantine_place_problem(path, roots)
    if problem:
        return problem
    expected = row_identity(lf)
    if expected is None:
        return "its identity is not recorded"
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return path, None, expected
    except OSError as exc:
        return f"cannot look at it: {exc.strerror or exc}"
    change = identity_change(expected, st)
    if change:
        return f"it changed in quarantine ({change}): not the file that was quarantined, left alone"
    return path, st, expected


def _own_entries(owner, ids: list[int] | None):
    qs = QuarantineEntry.objects.filter(owner=owner).select_related("local_file__hashes")
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs.order_by("pk").in_bulk()


def _entry_item(outcome: str, reason: str, entry: QuarantineEntry | None, entry_id: int, **fields) -> ActionItem:
    if entry is None:
        return ActionItem(outcome=outcome, reason=reason, entry_id=entry_id, **fields)
    lf = entry.local_file
    return ActionItem(outcome=outcome, reason=reason, entry_id=entry.pk, file_id=lf.pk, name=lf.name,
                      path=entry.quarantine_path, **fields)


def restore_files(*, owner, entry_ids: list[int], dry_run: bool = False, progress: Progress | None = None) -> ActionReport:
    """Put quarantined files back where they were (folders on the way made again); refused when something
    is at the original path now, or when that path is no longer under the owner's roots."""
    report = ActionReport(action="restore", dry_run=dry_run)
    ids = list(dict.fromkeys(entry_ids))
    entries = _own_entries(owner, ids)
    roots = model_roots_for(owner)
    return _each_entry(report, ids=ids, entries=entries, progress=progress,
                       act=lambda entry: _restore_one(entry, owner=owner, roots=roots, dry_run=dry_run))


def _restore_one(entry: QuarantineEntry, *, owner, roots: list[Path], dry_run: bool) -> ActionItem:
    lf = entry.local_file
    original = Path(entry.original_path)
    target = {"target": str(original)}
    checked = _check_quarantined(entry, roots)
    if isinstance(checked, str):
        return _entry_item(SKIPPED, checked, entry, entry.pk, **target)
    path, st, expected = checked
    if st is None:
        return _entry_item(SKIPPED, "the file is gone from the quarantine folder (purge forgets it)", entry, entry.pk,
                           **target)
    root = _root_of(original, roots) if original.is_absolute() and os.path.normpath(original) == str(original) else None
    if root is None:
        return _entry_item(SKIPPED, "its original place is no longer under your model roots", entry, entry.pk, **target)
    if os.path.lexists(original):
        return _entry_item(SKIPPED, f"something is at {original} now: move it away first, then restore", entry,
                           entry.pk, **target)
    other = LocalFile.objects.filter(owner=owner, origin=lf.origin, host=lf.host, path=str(original)).exclude(pk=lf.pk)
    other_id = other.values_list("pk", flat=True).first()
    if other_id is not None:
        return _entry_item(SKIPPED, f"another of your files (id {other_id}) is registered at that path: forget it first",
                           entry, entry.pk, **target)
    if dry_run:
        return _entry_item(PLANNED, "would be put back where it was", entry, entry.pk, **target)
    try:
        with file_ops.pinned_parent(path) as (sfd, sname), \
                file_ops.pinned_parent(original, create_below=root, mode=0o777) as (dfd, dname):
            moved, _how = file_ops.move_no_replace(src_dir_fd=sfd, src_name=sname, expect=expected, dst_dir_fd=dfd,
                                                   dst_name=dname, same_fs=file_ops.same_filesystem(st, os.fstat(dfd)))
    except FileOpError as exc:
        return _entry_item(SKIPPED, f"not restored: {exc}", entry, entry.pk, **target)
    with transaction.atomic():
        LocalFile.objects.filter(pk=lf.pk).update(path=str(original), device=moved.st_dev, inode=moved.st_ino,
                                                  size=moved.st_size, mtime_ns=moved.st_mtime_ns, quarantined_at=None)
        entry.delete()
    file_ops.remove_empty_dirs(path.parent, stop_at=_quarantined_owner_dir(path, owner))
    return _entry_item(DONE, "put back where it was", entry, entry.pk, **target)


def purge_quarantine(*, owner, entry_ids: list[int] | None = None, dry_run: bool,
                     progress: Progress | None = None) -> ActionReport:
    """Delete quarantined files for good (all of the owner's when entry_ids is None) and forget their rows.
    Says for each whether an exact copy of it stays among the owner's files."""
    report = ActionReport(action="purge", dry_run=dry_run)
    entries = _own_entries(owner, entry_ids)
    ids = list(dict.fromkeys(entry_ids)) if entry_ids is not None else list(entries)
    roots = model_roots_for(owner)
    return _each_entry(report, ids=ids, entries=entries, progress=progress,
                       act=lambda entry: _purge_one(entry, owner=owner, roots=roots, dry_run=dry_run))


def _each_entry(report: ActionReport, *, ids: list[int], entries: dict, progress: Progress | None,
                act) -> ActionReport:
    """Run `act` on each of the owner's entries in `ids`, in order; another user's (or no) entry is skipped."""
    for n, eid in enumerate(ids):
        _tick(progress, n, len(ids), f"checking entry {eid}", report)
        entry = entries.get(eid)
        report.items.append(act(entry) if entry is not None else _entry_item(SKIPPED, NOT_YOUR_ENTRY, None, eid))
    _tick(progress, len(ids), len(ids), "finished", report)
    return report


def _copy_that_stays(entry: QuarantineEntry, owner) -> str:
    sha = _stored_sha256(entry.local_file)
    if not sha:
        return "no other copy of it is known here"
    other = (LocalFile.objects.filter(owner=owner, hashes__sha256=sha, quarantined_at__isnull=True)
             .exclude(pk=entry.local_file_id).values_list("path", flat=True).first())
    return f"an exact copy stays at {other}" if other else "no other copy of it is known here: this was the only one"


def _purge_one(entry: QuarantineEntry, *, owner, roots: list[Path], dry_run: bool) -> ActionItem:
    checked = _check_quarantined(entry, roots)
    if isinstance(checked, str):
        return _entry_item(SKIPPED, checked, entry, entry.pk)
    path, st, expected = checked
    if st is None:
        if not dry_run:
            entry.local_file.delete()
        return _entry_item(PLANNED if dry_run else DONE,
                           "already gone from the quarantine folder: " + ("its row would be forgotten" if dry_run
                                                                         else "its row is forgotten"), entry, entry.pk)
    stays = _copy_that_stays(entry, owner)
    if dry_run:
        return _entry_item(PLANNED, f"would be deleted for good ({stays}){_freed_words(st)}", entry, entry.pk,
                           bytes_freed=_freed(st))
    try:
        with file_ops.pinned_parent(path) as (fd, name):
            gone = file_ops.unlink_checked(dir_fd=fd, name=name, expect=expected)
    except FileOpError as exc:
        return _entry_item(SKIPPED, f"not deleted: {exc}", entry, entry.pk)
    item = _entry_item(DONE, f"deleted for good ({stays}){_freed_words(gone)}", entry, entry.pk, bytes_freed=_freed(gone))
    entry.local_file.delete()  # its hashes, matches and this entry go with it
    file_ops.remove_empty_dirs(path.parent, stop_at=_quarantined_owner_dir(path, owner))
    return item
