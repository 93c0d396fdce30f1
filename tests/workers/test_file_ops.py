"""workers/file_ops.py: changes made through pinned folders, never through a link, never over the unchecked."""
from __future__ import annotations

import os

import pytest

from workers import file_ops
from workers.file_ops import FileOpError, identity_of


def _ident(path):
    return identity_of(os.stat(path, follow_symlinks=False))


def test_open_dir_refuses_a_symlink_anywhere_on_the_way(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.close(file_ops.open_dir(tmp_path / "real" / "sub"))
    with pytest.raises(FileOpError, match="symbolic link"):
        file_ops.open_dir(tmp_path / "link" / "sub")


def test_open_dir_creates_only_below_the_floor(tmp_path):
    with pytest.raises(FileOpError, match="no such folder"):
        file_ops.open_dir(tmp_path / "a" / "b")
    os.close(file_ops.open_dir(tmp_path / "a" / "b", create_below=tmp_path))
    assert (tmp_path / "a" / "b").is_dir() and oct((tmp_path / "a").stat().st_mode & 0o777) == "0o700"


def test_hardlink_over_replaces_the_copy_with_the_keeper(tmp_path):
    keeper, copy = tmp_path / "k", tmp_path / "c"
    keeper.write_bytes(b"same")
    copy.write_bytes(b"same")
    with file_ops.pinned_parent(keeper) as (kfd, kname), file_ops.pinned_parent(copy) as (cfd, cname):
        st = file_ops.hardlink_over(src_dir_fd=kfd, src_name=kname, src_expect=_ident(keeper),
                                    dst_dir_fd=cfd, dst_name=cname, dst_expect=_ident(copy))
    assert os.stat(copy).st_ino == os.stat(keeper).st_ino == st.st_ino
    assert sorted(os.listdir(tmp_path)) == ["c", "k"]


def test_hardlink_over_refuses_a_copy_changed_after_its_check_and_cleans_up(tmp_path):
    keeper, copy = tmp_path / "k", tmp_path / "c"
    keeper.write_bytes(b"same")
    copy.write_bytes(b"same")
    checked = _ident(copy)
    copy.rename(tmp_path / "old")
    copy.write_bytes(b"same")  # another inode now
    with file_ops.pinned_parent(keeper) as (kfd, kname), pytest.raises(FileOpError, match="the copy changed"):
        file_ops.hardlink_over(src_dir_fd=kfd, src_name=kname, src_expect=_ident(keeper),
                               dst_dir_fd=kfd, dst_name="c", dst_expect=checked)
    assert os.stat(copy).st_ino != os.stat(keeper).st_ino and sorted(os.listdir(tmp_path)) == ["c", "k", "old"]


def test_hardlink_over_never_links_a_symlink_swapped_for_the_keeper(tmp_path):
    keeper, copy, secret = tmp_path / "k", tmp_path / "c", tmp_path / "secret"
    keeper.write_bytes(b"same")
    copy.write_bytes(b"same")
    secret.write_bytes(b"same")
    checked = _ident(keeper)
    keeper.unlink()
    keeper.symlink_to(secret)
    with file_ops.pinned_parent(keeper) as (fd, _), pytest.raises(FileOpError, match="keeper changed"):
        file_ops.hardlink_over(src_dir_fd=fd, src_name="k", src_expect=checked, dst_dir_fd=fd, dst_name="c",
                               dst_expect=_ident(copy))
    assert os.stat(secret).st_nlink == 1 and not os.path.islink(copy)


@pytest.mark.parametrize("same_fs", [True, False], ids=["rename", "copy"])
def test_move_no_replace_moves_and_never_overwrites(tmp_path, same_fs):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"payload")
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    before = _ident(src)
    (tmp_path / "taken").write_bytes(b"keep me")
    with file_ops.pinned_parent(src) as (fd, name):
        with pytest.raises(FileOpError, match="already at the destination"):
            file_ops.move_no_replace(src_dir_fd=fd, src_name=name, expect=before, dst_dir_fd=fd, dst_name="taken",
                                     same_fs=same_fs)
        st, how = file_ops.move_no_replace(src_dir_fd=fd, src_name=name, expect=before, dst_dir_fd=fd,
                                           dst_name="dst", same_fs=same_fs)
    assert (tmp_path / "taken").read_bytes() == b"keep me" and not src.exists() and dst.read_bytes() == b"payload"
    assert how == ("rename" if same_fs else "copy") and (st.st_ino == before.inode) == same_fs
    assert st.st_mtime_ns == before.mtime_ns and st.st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["dst", "taken"]


def test_move_refuses_a_file_changed_since_its_check(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    before = _ident(src)
    src.write_bytes(b"payload, longer")
    with file_ops.pinned_parent(src) as (fd, name), pytest.raises(FileOpError, match="size changed"):
        file_ops.move_no_replace(src_dir_fd=fd, src_name=name, expect=before, dst_dir_fd=fd, dst_name="dst",
                                 same_fs=True)
    assert src.exists() and not (tmp_path / "dst").exists()


def test_unlink_checked_deletes_only_the_checked_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    checked = _ident(f)
    f.rename(tmp_path / "moved-away")  # kept, so its inode is not reused for the new file
    f.write_bytes(b"y")
    with file_ops.pinned_parent(f) as (fd, name):
        with pytest.raises(FileOpError, match="another file"):
            file_ops.unlink_checked(dir_fd=fd, name=name, expect=checked)
        assert file_ops.unlink_checked(dir_fd=fd, name=name, expect=_ident(f)).st_nlink == 1
    assert not f.exists() and (tmp_path / "moved-away").exists()


def test_remove_empty_dirs_stops_at_the_floor_and_at_content(tmp_path):
    (tmp_path / "q" / "a" / "b").mkdir(parents=True)
    (tmp_path / "q" / "keep.txt").write_text("x")
    file_ops.remove_empty_dirs(tmp_path / "q" / "a" / "b", stop_at=tmp_path)
    assert not (tmp_path / "q" / "a").exists() and (tmp_path / "q").exists()
