"""Hash lookup, duplicates, Hub indexing and sidecar import, at the service level."""
import hashlib
import json

import pytest

from models_catalog.models import CivitaiLookup, FileHashes, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services.duplicates import duplicate_groups
from models_catalog.services.huggingface import hf_repo_index
from models_catalog.services.import_hashes import hashes_import
from models_catalog.services.lookup import hash_lookup
from tests.model_builders import write_safetensors
from tests.fakes.civitai import fake_civitai, file_hashes  # noqa: F401
from tests.fakes.huggingface import fake_hub  # noqa: F401
from workers.hash_parse import HashQueryError

pytestmark = pytest.mark.django_db


def source_file(name="m.safetensors", **hashes) -> SourceFile:
    model, _ = SourceModel.objects.get_or_create(source=Source.CIVITAI, external_id="7", defaults={"name": "Seven"})
    version, _ = SourceVersion.objects.get_or_create(model=model, external_id="70", defaults={"name": "v7"})
    return SourceFile.objects.create(version=version, external_id=name, name=name, **hashes)


def local(owner, name, *, sha="", fmt="safetensors", content_id="", precision_id="", size=100, dtypes=None) -> LocalFile:
    lf = LocalFile.objects.create(owner=owner, origin="pushed", path=f"/m/{owner.username}/{name}", name=name, status="done",
                                  format=fmt, content_id=content_id, precision_id=precision_id, size=size,
                                  fingerprint={"dtypes": dtypes or {}, "components": {}})
    FileHashes.objects.create(local_file=lf, size=size, sha256=sha, autov2=sha[:10], source="pushed")
    return lf


# --- lookup ---------------------------------------------------------------


def test_lookup_finds_catalog_file_by_any_kind(user):
    sha = hashlib.sha256(b"m").hexdigest()
    source_file(sha256=sha, autov2=sha[:10], crc32="85114a0d")
    for query in (sha, sha.upper(), f"sha256:{sha}", sha[:10], f"Steps: 20, Model hash: {sha[:10]}, Model: m"):
        [r] = hash_lookup(text=query, user=user)
        assert [m.file for m in r.matches] == ["m.safetensors"], query
        assert r.matches[0].source == "civitai" and r.civitai == "known here"


def test_eight_hex_tries_autov1_and_crc32_and_says_which_matched(user):
    source_file(crc32="85114a0d")
    [r] = hash_lookup(text="85114A0D", user=user)
    assert set(r.kinds_tried) == {"AutoV1", "CRC32"} and r.note
    assert r.matches[0].hash_kind == "CRC32" and "weak" in r.matches[0].evidence
    assert r.matches[0].match == "short-hash"


def test_lookup_shows_my_files_but_never_another_users(user, other_user):
    sha = "ab" * 32
    local(user, "mine.safetensors", sha=sha)
    local(other_user, "secret-path.safetensors", sha=sha)
    [r] = hash_lookup(text=sha, user=user)
    assert [m.file for m in r.matches] == ["mine.safetensors"]
    [r] = hash_lookup(text=sha, user=None)
    assert r.matches == []


def test_lookup_ties_my_copy_to_what_it_is(user):
    from models_catalog.models import Match

    sha = "cd" * 32
    sf = source_file(sha256=sha)
    mine = local(user, "my_favourite_model_v2_RENAMED.safetensors", sha=sha)
    Match.objects.create(local_file=mine, source_file=sf, kind="renamed", evidence="SHA256 equal")
    [r] = hash_lookup(text=sha, user=user)
    [copy] = [m for m in r.matches if m.source == "my files"]
    assert (copy.match, copy.hash_kind, copy.model_id) == ("renamed", "SHA256", sf.version.model_id)
    assert copy.model == sf.version.model.name
    assert copy.summary.startswith(f"renamed copy of {sf.version.model.name}") and sf.name in copy.summary


def test_not_a_hash_is_a_clear_error():
    with pytest.raises(HashQueryError, match="not a hash"):
        hash_lookup(text="hello there", user=None)


def test_lookup_asks_civitai_once_and_caches_the_miss(fake_civitai, user):
    from models_catalog.services.civitai_lookup import civitai_client
    from workers.sources.http import RetryPolicy

    client = civitai_client(base_url=fake_civitai.base_url, retry=RetryPolicy(max_attempts=1), sleep=lambda s: None)
    model = fake_civitai.add_model(name="Remote")
    sha = hashlib.sha256(b"remote").hexdigest()
    fake_civitai.add_version(model, files=[{"name": "remote.safetensors", "hashes": file_hashes(sha256=sha)}])
    [r] = hash_lookup(text=sha[:10], user=user, ask_civitai=True, client=client)
    assert r.civitai == "hit" and r.matches[0].model == "Remote"
    [r] = hash_lookup(text="0123456789", user=user, ask_civitai=True, client=client)
    assert r.civitai == "miss" and r.matches == []
    asked = len(fake_civitai.requests)
    [r] = hash_lookup(text="0123456789", user=user, ask_civitai=True, client=client)
    assert r.civitai == "cached miss" and len(fake_civitai.requests) == asked
    assert CivitaiLookup.objects.filter(kind="any").count() == 2


# --- duplicates -------------------------------------------------------------


def test_duplicates_group_copies_conversions_and_precisions_and_suggest_safetensors(user, other_user):
    a = local(user, "a.safetensors", sha="1" * 64, content_id="c", precision_id="p", size=400, dtypes={"F16": 10})
    local(user, "copy-of-a.safetensors", sha="1" * 64, content_id="c", precision_id="p", size=400, dtypes={"F16": 10})
    local(user, "a.ckpt", sha="2" * 64, fmt="torch-zip", content_id="c", precision_id="p", size=420, dtypes={"F16": 10})
    local(user, "a-fp32.safetensors", sha="3" * 64, content_id="c32", precision_id="p", size=800, dtypes={"F32": 10})
    local(user, "unrelated.safetensors", sha="4" * 64, content_id="z", precision_id="zz")
    local(other_user, "b.safetensors", sha="1" * 64, content_id="c", precision_id="p")  # not mine: never grouped in
    [g16] = duplicate_groups(owner=user, prefer_precision="fp16")
    relations = {m.name: m.match for m in g16.members}
    assert relations == {"a.safetensors": "keep", "copy-of-a.safetensors": "exact copy", "a.ckpt": "converted",
                         "a-fp32.safetensors": "precision variant"}
    assert g16.keep_id == a.pk and g16.reclaimable_bytes == 400 + 420 + 800
    assert (g16.lossless_bytes, g16.lossy_bytes) == (400 + 420, 800) and "fp32" in g16.warning
    [g] = duplicate_groups(owner=user)  # the default never drops the full-precision copy
    assert next(m for m in g.members if m.match == "keep").name == "a-fp32.safetensors"
    assert {m.name: m.match for m in g.members}["a.safetensors"] == "precision variant"


def test_duplicates_name_the_identified_model(user):
    a = local(user, "a.safetensors", sha="1" * 64, content_id="c", precision_id="p")
    local(user, "b.ckpt", sha="2" * 64, fmt="torch-zip", content_id="c", precision_id="p")
    Match.objects.create(local_file=a, source_file=source_file(sha256="1" * 64), kind="exact", evidence="SHA256 equal")
    [g] = duplicate_groups(owner=user)
    assert g.model == "Seven"


# --- Hugging Face index -------------------------------------------------------


def test_hf_index_stores_files_and_identifies_local_copies(fake_hub, settings, user):
    settings.HF_ENDPOINT = fake_hub.endpoint
    weights = b"\x00" * 2048
    commit = fake_hub.add_repo("org/tiny", {"model.safetensors": weights, "README.md": b"# tiny\n"})
    lf = local(user, "renamed.safetensors", sha=hashlib.sha256(weights).hexdigest())
    version = hf_repo_index(repo_id="org/tiny")
    assert version.external_id == commit and version.model.source == "huggingface"
    files = {f.name: f for f in version.files.all()}
    assert files["model.safetensors"].sha256 == hashlib.sha256(weights).hexdigest()
    assert files["README.md"].sha256 == "" and len(files["README.md"].git_sha1) == 40
    [m] = Match.objects.filter(local_file=lf)
    assert m.kind == "renamed" and m.source_file == files["model.safetensors"]


def test_hf_index_missing_repo_is_a_clear_error(fake_hub, settings):
    from workers.sources.huggingface import HuggingFaceError

    settings.HF_ENDPOINT = fake_hub.endpoint
    with pytest.raises(HuggingFaceError) as exc:
        hf_repo_index(repo_id="org/nope")
    assert exc.value.kind == "repo_not_found"


# --- import of other tools' hashes ------------------------------------------


def test_import_civitai_info_sidecar_marks_hashes_imported_and_size_mismatch_discards(model_root, user, monkeypatch):
    from models_catalog.services import import_hashes as import_service

    monkeypatch.setattr(import_service, "enqueue_identify", lambda _id: None)
    good = write_safetensors(model_root / "good.safetensors", payload=b"g" * 64)
    bad = write_safetensors(model_root / "bad.safetensors", payload=b"b" * 64)
    for f, size in ((good, good.stat().st_size), (bad, bad.stat().st_size + 999)):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        info = {"id": 1, "modelId": 2, "name": "v1", "files": [{"name": f.name, "sizeKB": size / 1024,
                                                                  "hashes": {"SHA256": sha.upper()}, "primary": True}]}
        f.with_suffix(".civitai.info").write_text(json.dumps(info))
    outcome = hashes_import(root=model_root, owner=user)
    assert [lf.name for lf in outcome.imported] == ["good.safetensors"]
    assert FileHashes.objects.get(local_file__name="good.safetensors").source == "imported"
    assert not LocalFile.objects.filter(name="bad.safetensors").exists()
    assert outcome.errors or any("bad.safetensors" in p for p, _ in outcome.skipped)


def test_register_confirms_imported_hashes(model_root, user, monkeypatch):
    from models_catalog.services import import_hashes as import_service
    from models_catalog.services import register as register_service
    from models_catalog.services.register import local_file_register

    monkeypatch.setattr(import_service, "enqueue_identify", lambda _id: None)
    queued = []
    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: queued.extend(lf.pk for lf in local_files))
    f = write_safetensors(model_root / "m.safetensors", payload=b"m" * 64)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    (model_root / "m.cm-info.json").write_text(json.dumps({"ModelId": 1, "VersionId": 2, "Hashes": {"SHA256": sha}}))
    [lf] = hashes_import(root=model_root, owner=user).imported
    outcome = local_file_register(paths=[str(f)], owner=user)
    assert queued == [lf.pk] and outcome.queued == [lf]


def test_lookup_says_when_civitai_is_off(user):
    [r] = hash_lookup(text="0123456789", user=user, ask_civitai=False)
    assert r.civitai == "off" and r.matches == []


def test_lookup_queries_do_not_grow_with_the_copies_it_finds_nor_read_a_column_a_copy(user, other_user, django_user_model):
    """A lookup reads only some columns of each file it finds: reading a deferred one would be a query a copy."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from models_catalog.models import FolderMember

    staff = django_user_model.objects.create_user("staff-looker", password="pw-123456", is_staff=True)
    sha = hashlib.sha256(b"copied").hexdigest()
    source_file(sha256=sha, autov2=sha[:10])
    counts = {}
    for n in (1, 4):
        LocalFile.objects.all().delete()
        for i in range(n):
            for owner in (user, other_user):
                lf = local(owner, f"copy-{i}.safetensors", sha=sha)
                LocalFile.objects.filter(pk=lf.pk).update(status="error" if i == 1 else "done", error="cut short",
                                                          safety_verdict="unreadable" if i == 2 else "safe")
            folder = LocalFile.objects.create(owner=other_user, origin="pushed", path=f"/m/folder-{i}", name=f"folder-{i}",
                                              status="done", is_folder=True)
            FolderMember.objects.create(folder=folder, relative_path="unet/m.safetensors", size=3, sha256=sha)
        with CaptureQueriesContext(connection) as ctx:
            [result] = hash_lookup(text=sha, user=staff)
        mine = [m for m in result.matches if m.source == "my files"]
        assert len(mine) == 3 * n and {m.owner for m in mine} == {user.username, other_user.username}
        assert any(m.file == "folder-0/unet/m.safetensors" for m in mine)
        counts[n] = len(ctx)
    assert counts[1] == counts[4], counts
