import hashlib
import shutil
import socket
import subprocess

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import GatedRepoError

from tests.fakes.huggingface import fake_hub  # noqa: F401
from workers.sources.huggingface import (
    HubFile,
    HuggingFaceError,
    git_blob_sha1,
    index_repo,
    lfs_pointer_sha1,
    retry_after_from_headers,
)

WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 50
UNET = b"unet-weights" * 300
CONFIG = b'{"_class_name": "UNet2DConditionModel"}\n'
README = b"# a model\n"


def _git_hash_object(data: bytes) -> str:
    """Independent oracle: git itself."""
    done = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    return done.stdout.decode().strip()


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _seed(hub, **kw):
    return hub.add_repo(
        "org/model",
        {
            "model.safetensors": WEIGHTS,
            "unet/diffusion_pytorch_model.safetensors": UNET,
            "unet/config.json": CONFIG,
            "README.md": README,
        },
        **kw,
    )


def test_index_gives_sha256_for_lfs_files_and_git_sha1_for_plain_files(fake_hub):
    commit = _seed(fake_hub)

    index = index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)

    assert index.repo_id == "org/model" and index.repo_type == "model"
    assert index.revision == commit
    files = index.by_path()
    assert files["model.safetensors"] == HubFile(
        path="model.safetensors",
        size=len(WEIGHTS),
        sha256=hashlib.sha256(WEIGHTS).hexdigest(),
        git_sha1=None,
        is_lfs=True,
    )
    assert files["unet/diffusion_pytorch_model.safetensors"].sha256 == hashlib.sha256(UNET).hexdigest()
    assert files["unet/config.json"] == HubFile(
        path="unet/config.json",
        size=len(CONFIG),
        sha256=None,
        git_sha1=hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest(),
        is_lfs=False,
    )
    assert [f.path for f in index.files] == sorted(files)
    # One metadata call is enough when siblings carry their metadata.
    assert [r.path for r in fake_hub.requests] == ["/api/models/org/model"]
    assert fake_hub.requests[0].query["blobs"] == ["true"]


@needs_git
def test_git_blob_sha1_agrees_with_git_for_bytes_and_files(tmp_path):
    for data in (b"", CONFIG, bytes(range(256)) * 5000):
        path = tmp_path / "f"
        path.write_bytes(data)
        assert git_blob_sha1(data) == _git_hash_object(data)
        assert git_blob_sha1(path) == _git_hash_object(data)
        assert git_blob_sha1(str(path)) == _git_hash_object(data)


@needs_git
def test_lfs_pointer_sha1_is_the_blob_id_the_hub_reports(fake_hub):
    _seed(fake_hub)
    from huggingface_hub import HfApi

    siblings = HfApi(endpoint=fake_hub.endpoint, token=False).model_info("org/model", files_metadata=True).siblings
    lfs = next(s for s in siblings if s.rfilename == "model.safetensors")
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(WEIGHTS)}\n".encode()
    assert lfs_pointer_sha1(sha256, len(WEIGHTS)) == _git_hash_object(pointer) == lfs.blob_id
    assert lfs.lfs.pointer_size == len(pointer)


def test_revision_pinning_returns_the_old_commit_files(fake_hub):
    old = fake_hub.add_repo("org/model", {"model.safetensors": b"old weights" * 10})
    new = fake_hub.add_repo("org/model", {"model.safetensors": b"new weights!" * 10, "extra.json": b"{}"})

    pinned = index_repo(repo_id="org/model", revision=old, endpoint=fake_hub.endpoint, token=False)
    latest = index_repo(repo_id="org/model", revision="main", endpoint=fake_hub.endpoint, token=False)

    assert pinned.revision == old and latest.revision == new
    assert [f.path for f in pinned.files] == ["model.safetensors"]
    assert pinned.files[0].sha256 == hashlib.sha256(b"old weights" * 10).hexdigest()
    assert latest.by_path()["model.safetensors"].sha256 == hashlib.sha256(b"new weights!" * 10).hexdigest()
    assert fake_hub.requests[0].path == f"/api/models/org/model/revision/{old}"


def test_dataset_repos_are_indexed_through_the_datasets_api(fake_hub):
    data = b"a,b\n" + b"1,2\n" * 100
    commit = fake_hub.add_repo("org/data", {"train.parquet": data}, lfs_paths={"train.parquet"}, repo_type="dataset")

    index = index_repo(repo_id="org/data", repo_type="dataset", endpoint=fake_hub.endpoint, token=False)

    assert index.repo_type == "dataset" and index.revision == commit
    assert index.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert fake_hub.requests[0].path == "/api/datasets/org/data"
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/data", endpoint=fake_hub.endpoint, token=False)  # not a model
    assert e.value.kind == "repo_not_found"


def test_siblings_without_metadata_fall_back_to_the_paginated_tree_at_the_same_commit(fake_hub):
    commit = _seed(fake_hub)
    expected = index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)
    fake_hub.requests.clear()
    fake_hub.omit_sibling_metadata = True
    fake_hub.tree_page_size = 2

    index = index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)

    assert index == expected
    tree_calls = fake_hub.requests_to("/tree/")
    assert len(tree_calls) == 3  # 4 files + 1 folder, 2 per page
    assert all(r.path == f"/api/models/org/model/tree/{commit}" for r in tree_calls)
    assert all(r.query["recursive"] == ["true"] for r in tree_calls)


@pytest.mark.parametrize(
    ("repo_id", "revision", "kind"),
    [("org/absent", None, "repo_not_found"), ("org/model", "no-such-branch", "revision_not_found")],
)
def test_missing_repo_and_revision_map_to_their_kinds(fake_hub, repo_id, revision, kind):
    _seed(fake_hub)
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id=repo_id, revision=revision, endpoint=fake_hub.endpoint, token=False)
    assert e.value.kind == kind and e.value.retryable is False


def test_gated_refusal_maps_to_gated(fake_hub):
    _seed(fake_hub)
    fake_hub.fail_next(1, status=403, error_code="GatedRepo")
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)
    assert e.value.kind == "gated" and not e.value.retryable


def test_gated_repo_lists_files_anonymously_but_refuses_downloads(fake_hub, tmp_path):
    fake_hub.add_repo("org/gated", {"model.safetensors": WEIGHTS}, gated=True)
    index = index_repo(repo_id="org/gated", endpoint=fake_hub.endpoint, token=False)
    assert index.files[0].sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
    fake_hub.grant("hf_granted")
    path = hf_hub_download(
        "org/gated", "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token="hf_granted"
    )
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == index.files[0].sha256


def test_rate_limit_is_retryable_with_the_hub_reset_time(fake_hub):
    _seed(fake_hub)
    fake_hub.fail_next(1, status=429, retry_after=42)
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)
    assert (e.value.kind, e.value.retryable, e.value.retry_after, e.value.status) == ("rate_limited", True, 42, 429)
    # The failure was one-shot: the next call succeeds.
    assert index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False).files


def test_server_errors_and_unreachable_hub_are_unavailable_and_retryable(fake_hub):
    _seed(fake_hub)
    fake_hub.fail_next(1, status=503)
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/model", endpoint=fake_hub.endpoint, token=False)
    assert (e.value.kind, e.value.retryable) == ("unavailable", True)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/model", endpoint=f"http://127.0.0.1:{port}", token=False, timeout=5)
    assert (e.value.kind, e.value.retryable) == ("unavailable", True)


def test_invalid_repo_id_is_a_clean_error_without_a_request(fake_hub):
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="../etc/passwd", endpoint=fake_hub.endpoint, token=False)
    assert e.value.kind == "repo_not_found"
    assert fake_hub.requests == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"RateLimit": '"api";r=0;t=55', "Retry-After": "3"}, 55.0),
        ({"ratelimit": '"api";r=12;t=55', "Retry-After": "3"}, 3.0),  # quota not exhausted: not the cause
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_comes_from_the_ratelimit_header_first(headers, expected):
    assert retry_after_from_headers(headers) == expected


def test_an_answer_without_a_commit_sha_is_refused(fake_hub):
    fake_hub.add_repo("org/odd", {"a.json": b"{}"}, revision_sha="not-a-commit")
    with pytest.raises(HuggingFaceError) as e:
        index_repo(repo_id="org/odd", endpoint=fake_hub.endpoint, token=False)
    assert e.value.kind == "other" and "commit" in str(e.value)
