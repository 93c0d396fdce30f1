import hashlib
import json
import os

import pytest

from tests.fakes.huggingface import fake_hub  # noqa: F401
from workers.sources import hf_verify
from workers.sources.hf_verify import (
    EXIT_MISMATCH,
    EXIT_MISSING,
    EXIT_OK,
    VerifyError,
    exit_status,
    sha256_file,
    verify_local_dir,
)
from workers.sources.huggingface import HubFile, RepoIndex, index_repo

FILES = {
    "model.safetensors": b"W" * 3000 + bytes(range(256)),
    "unet/diffusion_pytorch_model.safetensors": b"U" * 5000,
    "unet/config.json": b'{"sample_size": 64}\n',
    "README.md": b"# readme\n",
}
LFS = {"model.safetensors", "unet/diffusion_pytorch_model.safetensors"}


def make_index(files=FILES, lfs=LFS):
    entries = []
    for path, data in files.items():
        if path in lfs:
            entries.append(HubFile(path, len(data), hashlib.sha256(data).hexdigest(), None, True))
        else:
            git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            entries.append(HubFile(path, len(data), None, git, False))
    return RepoIndex("org/model", "model", "c" * 40, tuple(sorted(entries, key=lambda f: f.path)))


def write_dir(root, files=FILES):
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


class CountingSha256:
    def __init__(self):
        self.calls = []

    def __call__(self, path):
        self.calls.append(os.path.basename(path))
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()


def test_a_complete_download_matches_an_index_from_the_hub(fake_hub, tmp_path):
    fake_hub.add_repo("org/model", FILES, lfs_paths=LFS)
    index = index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)
    write_dir(tmp_path)

    report = verify_local_dir(index=index, local_dir=tmp_path)

    assert report.matched == sorted(FILES)
    assert (report.mismatched, report.missing, report.extra, report.refused) == ([], [], [], [])
    assert exit_status(report) == EXIT_OK


def test_a_same_size_corruption_is_found_by_hash(tmp_path):
    write_dir(tmp_path)
    bad = bytearray(FILES["model.safetensors"])
    bad[1234] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bad)

    report = verify_local_dir(index=make_index(), local_dir=tmp_path)

    [m] = report.mismatched
    assert (m.path, m.reason) == ("model.safetensors", "hash")
    assert m.expected == hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    assert m.actual == hashlib.sha256(bytes(bad)).hexdigest()
    assert exit_status(report) == EXIT_MISMATCH


def test_a_corrupted_plain_git_file_is_found_by_git_sha1(tmp_path):
    write_dir(tmp_path)
    (tmp_path / "unet/config.json").write_bytes(b'{"sample_size": 96}\n')
    [m] = verify_local_dir(index=make_index(), local_dir=tmp_path).mismatched
    assert (m.path, m.reason) == ("unet/config.json", "hash")


def test_a_wrong_size_is_a_mismatch_without_hashing(tmp_path):
    write_dir(tmp_path)
    (tmp_path / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"U" * 4000)  # truncated
    hasher = CountingSha256()

    report = verify_local_dir(index=make_index(), local_dir=tmp_path, sha256_of=hasher)

    [m] = report.mismatched
    assert (m.reason, m.actual, m.expected_size, m.actual_size) == ("size", None, 5000, 4000)
    assert hasher.calls == ["model.safetensors"]


def test_missing_and_extra_files_are_listed_and_hf_metadata_is_ignored(tmp_path):
    write_dir(tmp_path, {k: v for k, v in FILES.items() if k != "README.md"})
    (tmp_path / "notes.txt").write_bytes(b"mine")
    meta = tmp_path / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "model.safetensors.metadata").write_text("c" * 40)

    report = verify_local_dir(index=make_index(), local_dir=tmp_path)

    assert report.missing == ["README.md"]
    assert report.extra == ["notes.txt"]
    assert report.mismatched == []
    assert exit_status(report) == EXIT_MISSING


def test_a_second_run_rehashes_nothing_and_a_touched_file_is_rehashed(tmp_path, monkeypatch):
    local = write_dir(tmp_path / "dl")
    state = tmp_path / "state.json"
    hasher = CountingSha256()
    git_calls = []
    real_git = hf_verify.git_blob_sha1
    monkeypatch.setattr(hf_verify, "git_blob_sha1", lambda p: git_calls.append(os.path.basename(p)) or real_git(p))

    first = verify_local_dir(index=make_index(), local_dir=local, state_path=state, sha256_of=hasher)
    assert (len(hasher.calls), len(git_calls), first.skipped_rehash) == (2, 2, 0)

    hasher.calls.clear(), git_calls.clear()
    second = verify_local_dir(index=make_index(), local_dir=local, state_path=state, sha256_of=hasher)
    assert (hasher.calls, git_calls) == ([], [])
    assert second.skipped_rehash == 4 and second.matched == first.matched

    st = os.stat(local / "model.safetensors")
    os.utime(local / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = verify_local_dir(index=make_index(), local_dir=local, state_path=state, sha256_of=hasher)
    assert hasher.calls == ["model.safetensors"] and third.skipped_rehash == 3

    saved_state = json.loads(state.read_text())
    assert saved_state["revision"] == "c" * 40
    assert saved_state["files"]["model.safetensors"]["result"] == "match"


def test_a_known_mismatch_is_checked_again_and_a_new_expected_hash_invalidates_the_state(tmp_path):
    local = write_dir(tmp_path / "dl")
    (local / "README.md").write_bytes(b"# README\n")
    state = tmp_path / "state.json"
    verify_local_dir(index=make_index(), local_dir=local, state_path=state)
    hasher = CountingSha256()

    again = verify_local_dir(index=make_index(), local_dir=local, state_path=state, sha256_of=hasher)
    assert [m.path for m in again.mismatched] == ["README.md"] and again.skipped_rehash == 3

    changed = dict(FILES, **{"model.safetensors": b"V" * 3256})  # same size, other content on the Hub
    result = verify_local_dir(index=make_index(changed), local_dir=local, state_path=state, sha256_of=hasher)
    assert hasher.calls == ["model.safetensors"]
    assert "model.safetensors" in [m.path for m in result.mismatched]


def test_a_corrupt_state_file_just_means_hashing_again(tmp_path):
    local = write_dir(tmp_path / "dl")
    state = tmp_path / "state.json"
    state.write_text("{not json")
    hasher = CountingSha256()
    report = verify_local_dir(index=make_index(), local_dir=local, state_path=state, sha256_of=hasher)
    assert len(hasher.calls) == 2 and report.skipped_rehash == 0
    assert json.loads(state.read_text())["version"] == hf_verify.STATE_VERSION


def test_a_state_file_inside_the_folder_is_not_an_extra_file(tmp_path):
    write_dir(tmp_path)
    report = verify_local_dir(index=make_index(), local_dir=tmp_path, state_path=tmp_path / ".verify-state.json")
    assert report.extra == []


def test_symlinks_leaving_the_folder_are_reported_not_followed(tmp_path):
    local = write_dir(tmp_path / "dl")
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(FILES["model.safetensors"])
    (local / "model.safetensors").unlink()
    os.symlink(outside, local / "model.safetensors")
    hasher = CountingSha256()

    report = verify_local_dir(index=make_index(), local_dir=local, sha256_of=hasher)

    assert [r.path for r in report.refused] == ["model.safetensors"]
    assert "model.safetensors" not in report.matched and "elsewhere.safetensors" not in hasher.calls
    assert exit_status(report) == EXIT_MISMATCH


def test_symlinks_inside_the_folder_are_verified(tmp_path):
    local = write_dir(tmp_path)
    (local / "store").mkdir()
    os.replace(local / "model.safetensors", local / "store" / "blob")
    os.symlink("store/blob", local / "model.safetensors")
    report = verify_local_dir(index=make_index(), local_dir=local)
    assert "model.safetensors" in report.matched and report.extra == ["store/blob"]


@pytest.mark.parametrize("hostile", ["../outside.safetensors", "/etc/passwd", "a/../../b", "c:evil"])
def test_index_paths_escaping_the_folder_are_refused(tmp_path, hostile):
    local = write_dir(tmp_path / "dl")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    index = make_index()
    hostile_file = HubFile(hostile, 1, "0" * 64, None, True)
    index = RepoIndex(index.repo_id, index.repo_type, index.revision, index.files + (hostile_file,))
    hasher = CountingSha256()

    report = verify_local_dir(index=index, local_dir=local, sha256_of=hasher)

    assert [r.path for r in report.refused] == [hostile]
    assert "outside.safetensors" not in hasher.calls and hostile not in report.missing


def test_a_directory_where_a_file_should_be_is_a_mismatch(tmp_path):
    write_dir(tmp_path, {k: v for k, v in FILES.items() if k != "README.md"})
    (tmp_path / "README.md").mkdir()
    [m] = verify_local_dir(index=make_index(), local_dir=tmp_path).mismatched
    assert (m.path, m.reason) == ("README.md", "not_a_file")


def test_progress_reports_bytes_up_to_the_total(tmp_path):
    big = {"big.safetensors": os.urandom(3 * 1024 * 1024 + 17), "small.json": b"{}"}
    write_dir(tmp_path, big)
    calls = []

    verify_local_dir(
        index=make_index(big, {"big.safetensors"}),
        local_dir=tmp_path,
        progress=lambda done, total, path: calls.append((done, total, path)),
    )

    total = sum(len(v) for v in big.values())
    assert all(t == total for _, t, _ in calls)
    dones = [d for d, _, _ in calls]
    assert dones == sorted(dones) and dones[-1] == total
    assert sum(1 for _, _, p in calls if p == "big.safetensors") >= 4  # per MiB, not just per file


def test_default_sha256_streams_correctly_across_chunks(tmp_path):
    data = os.urandom(2 * hf_verify.CHUNK + 123)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_a_missing_folder_is_a_verify_error(tmp_path):
    with pytest.raises(VerifyError):
        verify_local_dir(index=make_index(), local_dir=tmp_path / "nope")
