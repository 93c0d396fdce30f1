"""Per-user model roots: one selector (model_roots_for) decides where each user may register,
and every route asks it: the register service, the REST API, the CLI, folder hashing, Hub verify."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from models_catalog.models import FolderMember, Job, LocalFile, ModelRoot
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.hf_verify_job import hf_verify_job_create
from models_catalog.services.import_hashes import hashes_import
from models_catalog.services.paths import PathRefused, model_roots_for
from models_catalog.services.register import local_file_register
from tests.model_builders import write_safetensors
from tests.factories import error_of, token_client  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def queued(sent_for_hashing):
    return sent_for_hashing


@pytest.fixture
def roots(model_root, user, other_user) -> dict[str, Path]:
    """One server root split in two: alice's folder and bob's folder, each with a model file."""
    alice_dir, bob_dir = model_root / "alice", model_root / "bob"
    for folder in (alice_dir, bob_dir):
        folder.mkdir()
        write_safetensors(folder / "model.safetensors", payload=folder.name.encode() * 8)
    ModelRoot.objects.create(path=str(alice_dir)).users.add(user)
    ModelRoot.objects.create(path=str(bob_dir)).users.add(other_user)
    return {"server": model_root, "alice": alice_dir, "bob": bob_dir}


# --- the selector -------------------------------------------------------------------------------


def test_without_model_root_rows_every_user_gets_the_env_roots(model_root, user, other_user):
    assert model_roots_for(user) == model_roots_for(other_user) == [model_root.resolve()]


def test_with_rows_a_user_gets_only_the_roots_given_to_them_or_their_groups(roots, user, other_user):
    assert model_roots_for(user) == [roots["alice"].resolve()]
    shared = roots["server"] / "shared"
    shared.mkdir()
    team = Group.objects.create(name="team")
    ModelRoot.objects.create(path=str(shared)).groups.add(team)
    other_user.groups.add(team)
    assert model_roots_for(other_user) == [roots["bob"].resolve(), shared.resolve()]
    assert model_roots_for(user) == [roots["alice"].resolve()]


def test_a_user_with_no_row_may_register_nowhere_and_is_told_why(roots, db):
    carol = get_user_model().objects.create_user("carol", password="pw-carol-123")
    assert model_roots_for(carol) == []
    outcome = local_file_register(paths=[str(roots["alice"] / "model.safetensors")], owner=carol)
    assert "no model root is assigned to you" in outcome.refused[0][1]


def test_superusers_keep_every_env_root(roots, db):
    admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
    assert model_roots_for(admin) == [roots["server"].resolve()]


def test_a_row_outside_the_env_roots_grants_nothing(roots, user, tmp_path, settings):
    # The env roots shrank after the row was made (clean() refuses such rows when they are made).
    settings.MODEL_ROOTS = [roots["bob"]]
    assert model_roots_for(user) == []


def test_inactive_users_get_no_roots(model_root, user):
    user.is_active = False
    assert model_roots_for(user) == []


def test_a_model_root_must_lie_inside_the_env_roots(model_root, tmp_path):
    with pytest.raises(ValidationError, match="outside MODELXREF_MODEL_ROOTS"):
        ModelRoot(path=str(tmp_path / "elsewhere")).full_clean()
    with pytest.raises(ValidationError, match="absolute"):
        ModelRoot(path="relative/models").full_clean()
    (model_root / "real").mkdir()
    (tmp_path / "alias").symlink_to(model_root / "real")
    row = ModelRoot(path=str(tmp_path / "alias"))
    row.full_clean()  # a symlink into the roots is stored as where it points
    assert row.path == str((model_root / "real").resolve())


def test_staff_manage_model_roots_in_the_admin(roots, db):
    admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(admin)
    listing = client.get("/admin/models_catalog/modelroot/")
    assert listing.status_code == 200 and str(roots["alice"]) in listing.content.decode()
    assert client.get("/admin/models_catalog/modelroot/add/").status_code == 200


# --- every route: a user may not register under another user's root ----------------------------


def test_service_refuses_another_users_root(roots, user, queued):
    outcome = local_file_register(paths=[str(roots["bob"] / "model.safetensors"), str(roots["bob"])], owner=user)
    assert len(outcome.refused) == 2 and not outcome.files and not queued
    assert all("outside the model roots" in why for _, why in outcome.refused)
    mine = local_file_register(paths=[str(roots["alice"] / "model.safetensors")], owner=user)
    assert len(mine.queued) == 1


def test_service_refuses_a_symlink_from_my_root_into_another_users_root(roots, user):
    (roots["alice"] / "borrowed.safetensors").symlink_to(roots["bob"] / "model.safetensors")
    outcome = local_file_register(paths=[str(roots["alice"])], owner=user)
    assert [Path(lf.path).name for lf in outcome.queued] == ["model.safetensors"]
    assert any("borrowed.safetensors" in raw for raw, _ in outcome.refused)


def test_api_refuses_another_users_root_without_saying_whether_the_path_exists(roots, user):
    paths = [str(roots["bob"] / "model.safetensors"), str(roots["bob"] / "no-such.safetensors")]
    resp = token_client(user).post("/api/v1/files/register/", {"paths": paths}, format="json")
    assert resp.status_code == 200
    reasons = [r["reason"] for r in resp.json()["refused"]]
    assert reasons == [f"{p} is outside the model roots ({roots['alice'].resolve()})" for p in paths]
    assert not LocalFile.objects.exists()


def test_cli_register_user_refuses_another_users_root(roots, user):
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing registered"):
        call_command("register", str(roots["bob"] / "model.safetensors"), user="alice", stdout=io.StringIO(), stderr=err)
    assert "outside the model roots" in err.getvalue()
    call_command("register", str(roots["alice"] / "model.safetensors"), user="alice", stdout=io.StringIO())
    assert LocalFile.objects.get().owner == user


def test_folder_hashing_keeps_members_inside_the_owners_roots(roots, user):
    pipe = roots["alice"] / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    write_safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors")
    # Inside the server's roots, but in bob's folder: alice's folder may not read it.
    (pipe / "unet" / "extra.safetensors").symlink_to(roots["bob"] / "model.safetensors")
    [lf] = local_file_register(paths=[str(pipe)], owner=user).queued
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "error" and "outside the allowed folders" in lf.error
    assert not FolderMember.objects.filter(folder=lf).exists()


def test_hub_verify_refuses_another_users_root(roots, user):
    with pytest.raises(PathRefused):
        hf_verify_job_create(owner=user, repo_id="org/model", local_dir=str(roots["bob"]))
    resp = token_client(user).post("/api/v1/jobs/hf-verify/", {"repo_id": "org/model", "local_dir": str(roots["bob"])},
                                   format="json")
    assert resp.status_code == 400 and error_of(resp)["code"] == "path_refused"
    assert not Job.objects.exists()


def test_import_hashes_refuses_another_users_root(roots, user):
    outcome = hashes_import(root=roots["bob"], owner=user)
    assert outcome.errors and "outside the model roots" in outcome.errors[0][1] and not outcome.imported
