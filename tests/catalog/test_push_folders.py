"""Pushed diffusers folders: one record in, one LocalFile with its digest and members out,
as a registered folder is stored (POST /api/v1/files/push/ with "kind": "folder")."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pytest
from django.test import Client

from models_catalog.models import FolderMember, LocalFile
from tests.model_builders import write_safetensors
from tests.factories import error_of, token_client  # noqa: F401
from workers.hashing import hash_file, hash_folder
from workers.modelfiles.analyse import analyse_path

pytestmark = pytest.mark.django_db

PUSH = "/api/v1/files/push/"


@pytest.fixture
def alice(user):
    return token_client(user)


def make_diffusers(root: Path, *, unet: bytes = b"\x01" * 16, vae: bytes = b"\x02" * 16) -> Path:
    (root / "unet").mkdir(parents=True, exist_ok=True)
    (root / "vae").mkdir(exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", unet)
    write_safetensors(root / "vae" / "diffusion_pytorch_model.safetensors", vae)
    return root


def folder_record(folder: Path, *, path: str = "/remote/models/sd15") -> dict:
    """The record the push client sends for a folder, built from the engine's own pieces."""
    hashes = hash_folder(folder)
    analysis = analyse_path(folder, member_paths=[m.relative_path for m in hashes.members])
    return {"path": path, "kind": "folder", "folder": hashes.to_json(), "format": analysis.format,
            "fingerprint": analysis.fingerprint, "safety": {"verdict": analysis.verdict, "findings": analysis.findings}}


def one_member_record(tmp_path: Path, relative_path: str, *, path: str) -> dict:
    """A folder record with a single member named `relative_path`: the digest stays right whatever the name."""
    member = hash_file(write_safetensors(tmp_path / "member.safetensors", b"\x09" * 16))
    counted = relative_path.endswith((".ckpt", ".safetensors", ".bin", ".pt", ".pth"))  # InvokeAI's suffixes
    digest = blake3.blake3(member.blake3.encode() if counted else b"").hexdigest()
    return {"path": path, "kind": "folder", "folder": {
        "size": member.size, "digest": digest, "members": [{"relative_path": relative_path, "hashes": member.to_json()}]}}


def expected_digest(files: list[Path]) -> str:
    """InvokeAI's folder hash, computed here: BLAKE3 over the members' BLAKE3 hex, in path order."""
    return blake3.blake3(b"".join(blake3.blake3(f.read_bytes()).hexdigest().encode() for f in files)).hexdigest()


def push(client, files: list, host: str = "gpu-box") -> dict:
    resp = client.post(PUSH, {"host": host, "files": files}, format="json")
    assert resp.status_code == 200, resp.content
    return resp.json()


def test_pushed_folder_is_one_local_file_with_its_members_and_digest(alice, user, tmp_path):
    folder = make_diffusers(tmp_path / "sd15")
    record = folder_record(folder)
    body = push(alice, [record])
    assert (body["created"], body["errors"]) == (1, [])
    lf = LocalFile.objects.select_related("hashes").get(pk=body["ids"][0])
    assert LocalFile.objects.count() == 1
    assert (lf.owner, lf.origin, lf.host, lf.path, lf.name) == (user, "pushed", "gpu-box", "/remote/models/sd15", "sd15")
    assert lf.is_folder and lf.status == "done" and lf.format == "diffusers"
    weights = [folder / "unet" / "diffusion_pytorch_model.safetensors", folder / "vae" / "diffusion_pytorch_model.safetensors"]
    assert lf.size == sum(f.stat().st_size for f in weights)
    assert lf.hashes.folder_digest == expected_digest(weights)
    assert lf.hashes.source == "pushed" and lf.hashes.sha256 == "" and lf.hashes.blake3 == ""
    assert lf.content_id == record["fingerprint"]["content_id"] and lf.content_id
    members = list(FolderMember.objects.filter(folder=lf).order_by("relative_path"))
    assert [m.relative_path for m in members] == [f.relative_to(folder).as_posix() for f in weights]
    assert [m.sha256 for m in members] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in weights]
    assert [m.size for m in members] == [f.stat().st_size for f in weights]


@pytest.mark.parametrize("bad", [
    "../escape.safetensors", "unet/../../escape.safetensors", "/etc/abs.safetensors", "unet\\model.safetensors",
    "unet/\x01model.safetensors", "./unet/model.safetensors", "unet//model.safetensors", "C:/x.safetensors",
    "unet/config.json",
])
def test_bad_member_path_is_refused_by_index_and_the_other_records_are_stored(alice, tmp_path, bad):
    folder = make_diffusers(tmp_path / "sd15")
    file_doc = hash_file(write_safetensors(tmp_path / "lora.safetensors", b"\x07" * 16)).to_json()
    files = [folder_record(folder), one_member_record(tmp_path, bad, path="/remote/bad"),
             {"path": "/remote/lora.safetensors", "hashes": file_doc}]
    body = push(alice, files)
    assert [e["index"] for e in body["errors"]] == [1]
    assert body["errors"][0]["path"] == "/remote/bad" and body["errors"][0]["error"].startswith("member ")
    assert body["created"] == 2
    assert sorted(LocalFile.objects.values_list("path", flat=True)) == ["/remote/lora.safetensors", "/remote/models/sd15"]
    assert not FolderMember.objects.filter(folder__path="/remote/bad").exists()


def test_a_good_member_path_passes_the_same_check(alice, tmp_path):
    body = push(alice, [one_member_record(tmp_path, "unet/diffusion_pytorch_model.fp16.safetensors", path="/remote/ok")])
    assert (body["created"], body["errors"]) == (1, [])
    assert FolderMember.objects.get().relative_path == "unet/diffusion_pytorch_model.fp16.safetensors"


@pytest.mark.parametrize("mangle, says", [
    (lambda r: r["folder"].update(digest="0" * 64), "digest"),
    (lambda r: r["folder"].update(members=[], digest=blake3.blake3(b"").hexdigest()), "at least one member"),
    (lambda r: r.update(folder="not an object"), "members"),
    (lambda r: r.update(kind="archive"), "kind"),
])
def test_malformed_folder_records_are_refused(alice, tmp_path, mangle, says):
    record = folder_record(make_diffusers(tmp_path / "sd15"))
    mangle(record)
    body = push(alice, [record])
    assert body["created"] == 0 and [e["index"] for e in body["errors"]] == [0]
    assert says in body["errors"][0]["error"]
    assert not LocalFile.objects.exists()


def test_a_member_listed_twice_is_refused(alice, tmp_path):
    record = one_member_record(tmp_path, "unet/model.safetensors", path="/remote/twice")
    member = record["folder"]["members"][0]
    record["folder"]["members"].append(member)
    # Counted twice, the digest is still right: only the duplicate check stops it.
    record["folder"]["digest"] = blake3.blake3(member["hashes"]["BLAKE3"].lower().encode() * 2).hexdigest()
    body = push(alice, [record])
    assert [e["index"] for e in body["errors"]] == [0] and "twice" in body["errors"][0]["error"]
    assert not LocalFile.objects.exists()


def test_repushing_an_unchanged_folder_is_unchanged_and_a_changed_one_replaces_its_members(alice, tmp_path):
    folder = make_diffusers(tmp_path / "sd15")
    first = push(alice, [folder_record(folder)])
    again = push(alice, [folder_record(folder)])
    assert (again["unchanged"], again["created"], again["updated"], again["ids"]) == (1, 0, 0, first["ids"])

    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    write_safetensors(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors", b"\x05" * 8)
    changed = push(alice, [folder_record(folder)])
    assert (changed["updated"], changed["ids"]) == (1, first["ids"])
    lf = LocalFile.objects.select_related("hashes").get(pk=first["ids"][0])
    members = list(FolderMember.objects.filter(folder=lf).values_list("relative_path", flat=True))
    assert members == ["unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors"]
    weights = [folder / "unet" / m.split("/")[1] for m in members]
    assert lf.hashes.folder_digest == expected_digest(weights)


def test_a_renamed_member_with_the_same_bytes_is_an_update(alice, tmp_path):
    # The digest has no paths in it: renaming a member alone keeps it, the member rows must still change.
    folder = make_diffusers(tmp_path / "sd15")
    first = push(alice, [folder_record(folder)])
    (folder / "vae" / "diffusion_pytorch_model.safetensors").rename(folder / "vae" / "model.safetensors")
    body = push(alice, [folder_record(folder)])
    assert body["updated"] == 1
    assert FolderMember.objects.filter(folder_id=first["ids"][0], relative_path="vae/model.safetensors").exists()


def test_a_path_pushed_as_a_file_then_as_a_folder_becomes_a_folder_and_back(alice, tmp_path):
    folder = make_diffusers(tmp_path / "sd15")
    file_doc = hash_file(write_safetensors(tmp_path / "one.safetensors", b"\x03" * 16)).to_json()
    path = "/remote/models/sd15"
    first = push(alice, [{"path": path, "hashes": file_doc}])
    as_folder = push(alice, [folder_record(folder, path=path)])
    assert as_folder["updated"] == 1 and as_folder["ids"] == first["ids"]
    lf = LocalFile.objects.select_related("hashes").get()
    assert lf.is_folder and lf.hashes.sha256 == "" and lf.hashes.folder_digest and lf.members.count() == 2
    as_file = push(alice, [{"path": path, "hashes": file_doc}])
    assert as_file["updated"] == 1
    lf = LocalFile.objects.select_related("hashes").get()
    assert not lf.is_folder and lf.hashes.folder_digest == "" and lf.hashes.sha256 == file_doc["SHA256"].lower()
    assert lf.members.count() == 0


def test_the_file_page_shows_a_pushed_folder_with_its_members(alice, user, tmp_path):
    folder = make_diffusers(tmp_path / "sd15")
    (pk,) = push(alice, [folder_record(folder)])["ids"]
    browser = Client()
    browser.force_login(user)
    resp = browser.get(f"/files/{pk}/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "Weight files in this folder" in html
    for rel in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert rel in html
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest().upper() in html
    detail = alice.get(f"/api/v1/files/{pk}/").json()
    assert detail["is_folder"] is True
    assert {m["relative_path"] for m in detail["members"]} == {
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"}


def test_the_schema_documents_file_and_folder_records(alice):
    from rest_framework.test import APIClient

    schemas = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]["schemas"]
    kinds = [ref["$ref"].rsplit("/", 1)[-1] for ref in schemas["PushRecord"]["oneOf"]]
    assert kinds == ["PushFileRecord", "PushFolderRecord"]
    assert "hashes" in schemas["PushFileRecord"]["required"]
    assert {"kind", "folder"} <= set(schemas["PushFolderRecord"]["required"])
    assert set(schemas["PushFolderHashes"]["properties"]) >= {"digest", "members"}


def test_sizes_beyond_a_64_bit_column_are_refused_not_crashed(alice, tmp_path):
    record = folder_record(make_diffusers(tmp_path / "sd15"))
    # Sizes this large also need an AutoV1 to be well-formed; only the size is wrong then.
    for member in record["folder"]["members"]:
        member["hashes"].update(size=2**62, AutoV1="0" * 8)  # each fits; their sum does not
    file_doc = hash_file(write_safetensors(tmp_path / "one.safetensors", b"\x03" * 16)).to_json()
    body = push(alice, [record, {"path": "/remote/huge.safetensors", "hashes": {**file_doc, "size": 2**64, "AutoV1": "0" * 8}}])
    assert [e["index"] for e in body["errors"]] == [0, 1] and all("too large" in e["error"] for e in body["errors"])
    assert not LocalFile.objects.exists()
