"""SHA256_12 (SHA256[:12], what some Forge builds write as "Model hash") end to end: the column filled for
old rows by migration 0020 and for new ones by hashing, then found through the lookup service, page, API,
`manage.py lookup` and a pasted infotext. Expected values come from hashlib, never from the app."""
from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import call_command

from models_catalog.models import SourceFile, SourceModel, SourceVersion
from models_catalog.services.lookup import hash_lookup
from tests.model_builders import write_safetensors
from tests.factories import client_for, hashed, login, migrated_to, migrated_to_latest, page, token_client
from tests.fakes.civitai import fake_civitai, file_hashes  # noqa: F401

PAYLOAD = b"forge twelve" * 8


@pytest.fixture
def mine(model_root, user):
    lf = hashed(write_safetensors(model_root / "forge_model.safetensors", payload=PAYLOAD), user)
    sha = hashlib.sha256((model_root / "forge_model.safetensors").read_bytes()).hexdigest()
    assert lf.hashes.sha256_12 == sha[:12]  # written by the hashing stage, from the engine record
    return lf, sha


def my_match(results):
    [r] = results
    [m] = [m for m in r.matches if m.source == "my files"]
    return r, m


@pytest.mark.django_db
def test_service_finds_my_file_by_its_sha256_12(mine, user):
    lf, sha = mine
    r, m = my_match(hash_lookup(text=sha[:12].upper(), user=user, ask_civitai=False))
    assert r.kinds_tried == ("AutoV3", "SHA256_12")
    assert (m.local_file_id, m.hash_kind) == (lf.pk, "SHA256_12")
    assert m.evidence.startswith("SHA256_12 equal: the first 12 hex of the SHA256 agree")


@pytest.mark.django_db
def test_forge_infotext_model_hash_of_12_finds_my_file(mine, user):
    lf, sha = mine
    text = f"a castle\nSteps: 20, Sampler: Euler a, Model hash: {sha[:12]}, Model: forge_model, Version: f2.0"
    r, m = my_match(hash_lookup(text=text, user=user, ask_civitai=False))
    assert r.label == "model" and "forge_model" in r.note
    assert (m.local_file_id, m.hash_kind) == (lf.pk, "SHA256_12")


@pytest.mark.django_db
def test_lookup_page_finds_my_file_by_its_sha256_12(mine, user):
    lf, sha = mine
    html_ = page(login(user), "/lookup/", q=sha[:12])
    assert "forge_model.safetensors" in html_ and "SHA256_12 equal" in html_


@pytest.mark.django_db
def test_api_lookup_finds_my_file_by_its_sha256_12(mine, user):
    lf, sha = mine
    resp = token_client(user).get("/api/v1/lookup/", {"q": f"sha256_12:{sha[:12]}"})
    assert resp.status_code == 200
    [result] = resp.json()
    assert result["kinds_tried"] == ["SHA256_12"]
    [m] = result["matches"]
    assert (m["local_file_id"], m["hash_kind"], m["source"]) == (lf.pk, "SHA256_12", "my files")


@pytest.mark.django_db
def test_lookup_command_finds_my_file_by_its_sha256_12(mine, user):
    lf, sha = mine
    out = io.StringIO()
    call_command("lookup", sha[:12], "--offline", "--user", user.username, stdout=out)
    text = out.getvalue()
    assert "tried AutoV3, SHA256_12" in text
    assert "[my files] " in text and "forge_model.safetensors" in text and "SHA256_12 equal" in text


@pytest.mark.django_db
def test_twelve_hex_matching_one_file_as_autov3_and_another_as_sha256_12_says_which_is_which(mine, user):
    # Nothing in 12 hex tells the kinds apart: both are tried and each match names the kind that agreed and
    # what that proves (registry strengths: AutoV3 same-weights, SHA256_12 short-hash).
    lf, sha = mine
    model = SourceModel.objects.create(source="civitai", external_id="12", name="Other Model")
    version = SourceVersion.objects.create(model=model, external_id="120", name="v1")
    SourceFile.objects.create(version=version, external_id="a", name="other.safetensors", autov3=sha[:12])
    [r] = hash_lookup(text=sha[:12], user=user, ask_civitai=False)
    found = {(m.source, m.file, m.hash_kind, m.match) for m in r.matches}
    assert ("civitai", "other.safetensors", "AutoV3", "same-weights") in found
    assert any(m.source == "my files" and m.hash_kind == "SHA256_12" for m in r.matches)


@pytest.mark.django_db
def test_sha256_12_alone_asks_civitai_by_its_autov2_and_the_stored_file_answers_it(fake_civitai, user):
    # Civitai's by-hash does not match SHA256_12 yet (kinds.by_hash=False): the lookup sends its first 10
    # hex (AutoV2), then compares the file Civitai returned on all 12.
    sha = hashlib.sha256(b"remote forge model").hexdigest()
    model = fake_civitai.add_model(name="Remote Forge")
    fake_civitai.add_version(model, files=[{"name": "remote.safetensors", "hashes": file_hashes(sha256=sha)}])
    [r] = hash_lookup(text=f"sha256_12:{sha[:12]}", user=user, ask_civitai=True, client=client_for(fake_civitai))
    assert r.civitai == "hit"
    assert fake_civitai.count("GET", f"/api/v1/model-versions/by-hash/{sha[:10].upper()}") == 1
    [m] = r.matches
    assert (m.model, m.hash_kind, m.match) == ("Remote Forge", "SHA256_12", "short-hash")
    assert SourceFile.objects.get(name="remote.safetensors").sha256_12 == sha[:12]
    [r] = hash_lookup(text=f"sha256_12:{'0' * 12}", user=user, ask_civitai=True, client=client_for(fake_civitai))
    assert r.matches == [] and r.civitai == "miss"


@pytest.mark.django_db(transaction=True)
def test_migration_0020_fills_sha256_12_of_rows_that_existed_before_it():
    before, after = ("models_catalog", "0021_worker_heartbeat"), ("models_catalog", "0022_sha256_12")
    old = migrated_to(before)
    sha = hashlib.sha256(b"old row").hexdigest()
    owner = old.get_model("auth", "User").objects.create(username="old")
    lf = old.get_model("models_catalog", "LocalFile").objects.create(owner=owner, origin="pushed", path="/m/o", name="o")
    old.get_model("models_catalog", "FileHashes").objects.create(local_file=lf, size=1, sha256=sha)
    folder = old.get_model("models_catalog", "LocalFile").objects.create(owner=owner, origin="pushed", path="/m/f", name="f")
    old.get_model("models_catalog", "FolderMember").objects.create(folder=folder, relative_path="unet/a.safetensors",
                                                                   size=1, sha256=sha)
    model = old.get_model("models_catalog", "SourceModel").objects.create(source="civitai", external_id="1", name="M")
    version = old.get_model("models_catalog", "SourceVersion").objects.create(model=model, external_id="2")
    source_files = old.get_model("models_catalog", "SourceFile").objects
    source_files.create(version=version, external_id="3", name="a", sha256=sha)
    source_files.create(version=version, external_id="4", name="b")  # no SHA256: stays blank

    new = migrated_to(after)
    assert new.get_model("models_catalog", "FileHashes").objects.get().sha256_12 == sha[:12]
    assert new.get_model("models_catalog", "FolderMember").objects.get().sha256_12 == sha[:12]
    got = dict(new.get_model("models_catalog", "SourceFile").objects.values_list("external_id", "sha256_12"))
    assert got == {"3": sha[:12], "4": ""}
    migrated_to_latest()
