"""Convert to safetensors through the catalog: `manage.py convert`, the job (web page and API).

The conversion itself is tested in tests/workers/test_convert.py; here: the model roots (for the
source and the output), registering the output so it matches its source, the job and its words,
the page's preview and confirmation, the API's errors, and the quarantine hook.
"""
from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient
from safetensors.torch import load_file

from models_catalog.models import Job, LocalFile
from models_catalog.services import convert as convert_service
from models_catalog.services.convert import convert_job_create, convert_job_run
from models_catalog.services.hashing import local_file_hash
from models_catalog.services.register import local_file_register
from tests.workers.modelfiles import hostile

pytestmark = pytest.mark.django_db


def _checkpoint(path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, generator=gen),
                               "first_stage_model.decoder.conv_out.weight": torch.randn(3, 8, generator=gen)},
                "epoch": 4, "global_step": 1000, "optimizer_states": [{"state": {0: {"m": torch.zeros(8)}}}]}, path)
    return path


def _analysed(path: Path, owner) -> LocalFile:
    """Register and hash + analyse inline (the queue is not involved)."""
    lf = local_file_register(paths=[str(path)], owner=owner).files[0]
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "done", lf.error
    return lf


def _run(*args, user) -> str:
    out = StringIO()
    call_command("convert", *args, "--user", user.username, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- manage.py convert ----------------------------------------------------------------------

def test_command_converts_beside_the_source_and_registers_the_output(model_root, user, sent_for_hashing):
    source = _checkpoint(model_root / "toad.ckpt")
    src_file = _analysed(source, user)
    text = _run(str(source), user=user)
    out = model_root / "toad.safetensors"
    assert out.is_file() and "verified" in text and "registered as file" in text
    # The catalog's own content_id of the source was compared too (another reading of the file).
    assert "equal to the one the catalog holds for the source" in text
    registered = LocalFile.objects.get(path=str(out))
    assert registered.owner == user and registered.pk in sent_for_hashing
    local_file_hash(local_file_id=registered.pk)
    registered.refresh_from_db()
    assert registered.format == "safetensors" and registered.safety_verdict == "safe"
    assert registered.content_id == src_file.content_id  # so the two are one model in another container
    assert set(load_file(out)) == {"model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_out.weight"}
    assert source.exists()  # --keep-original is the default


def test_command_fp16_names_the_cast_and_matches_by_precision(model_root, user, sent_for_hashing):
    source = _checkpoint(model_root / "toad.ckpt")
    src_file = _analysed(source, user)
    body = json.loads(_run(str(source), "--dtype", "fp16", "--json", user=user))
    assert body["output"] == str(model_root / "toad.fp16.safetensors") and body["dtypes"] == {"F16": 2}
    cast = LocalFile.objects.get(pk=body["registered"])
    local_file_hash(local_file_id=cast.pk)
    cast.refresh_from_db()
    assert cast.precision_id == src_file.precision_id and cast.content_id != src_file.content_id


def test_command_refuses_an_output_outside_the_model_roots(model_root, user, tmp_path, sent_for_hashing):
    source = _checkpoint(model_root / "toad.ckpt")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (model_root / "escape").symlink_to(outside)
    for out in (outside / "x.safetensors", model_root / "escape" / "x.safetensors",
                model_root / ".." / "elsewhere" / "x.safetensors"):
        with pytest.raises(CommandError, match="outside the model roots"):
            _run(str(source), "--out", str(out), user=user)
    assert list(outside.iterdir()) == [] and not sent_for_hashing


def test_command_refuses_a_source_outside_the_model_roots(model_root, user, tmp_path):
    source = _checkpoint(tmp_path / "stray.ckpt")
    with pytest.raises(CommandError, match="outside the model roots"):
        _run(str(source), "--out", str(model_root / "x.safetensors"), user=user)
    assert not (model_root / "x.safetensors").exists()


def test_command_refuses_a_hostile_checkpoint_with_its_verdict(model_root, user, tmp_path, sent_for_hashing):
    canary = tmp_path / "CANARY"
    bad = hostile.zip_hidden_pickle(model_root / "free-upscaler.pt", canary)
    with pytest.raises(CommandError) as refused:
        _run(str(bad), user=user)
    assert "dangerous" in str(refused.value) and "os.system" in str(refused.value)
    assert not canary.exists() and not (model_root / "free-upscaler.safetensors").exists()
    assert sorted(p.name for p in model_root.iterdir()) == ["free-upscaler.pt"] and not sent_for_hashing


def test_command_never_replaces_an_existing_file(model_root, user):
    source = _checkpoint(model_root / "toad.ckpt")
    (model_root / "toad.safetensors").write_bytes(b"mine")
    with pytest.raises(CommandError, match="already exists"):
        _run(str(source), user=user)
    assert (model_root / "toad.safetensors").read_bytes() == b"mine"


def test_quarantine_original_moves_the_source_into_quarantine_once_the_output_is_verified(model_root, user,
                                                                                         sent_for_hashing):
    from models_catalog.models import QuarantineEntry

    source = _checkpoint(model_root / "toad.ckpt")
    _analysed(source, user)
    _run(str(source), "--quarantine-original", user=user)
    assert (model_root / "toad.safetensors").exists() and not source.exists()
    [entry] = QuarantineEntry.objects.filter(owner=user)
    assert entry.original_path == str(source) and Path(entry.quarantine_path).exists()


def test_quarantine_original_hands_the_source_to_the_service_once_verified(model_root, user, sent_for_hashing,
                                                                           monkeypatch):
    source = _checkpoint(model_root / "toad.ckpt")
    calls = []
    monkeypatch.setattr(convert_service, "quarantine_service",
                        lambda: lambda **kw: calls.append((kw, (model_root / "toad.safetensors").exists())))
    _run(str(source), "--quarantine-original", user=user)
    (kwargs, output_existed), = calls
    assert output_existed and kwargs["owner"] == user and kwargs["local_file"].path == str(source)
    assert "converted to safetensors" in kwargs["reason"]


# --- the job ------------------------------------------------------------------------------

def test_job_converts_with_progress_and_a_result(model_root, user, sent_for_hashing, django_capture_on_commit_callbacks,
                                                monkeypatch):
    from workers import tasks

    source = _checkpoint(model_root / "toad.ckpt")
    lf = _analysed(source, user)
    queued = []
    monkeypatch.setattr(tasks.convert_checkpoint_job, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        job = convert_job_create(owner=user, local_file=lf, dtype="bf16")
    assert queued == [job.pk] and job.kind == "convert" and job.params["out"] == str(model_root / "toad.bf16.safetensors")
    convert_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "done", job.message
    assert job.progress_done == job.progress_total > 0
    result = job.result
    assert result["output"] == job.params["out"] and result["metadata"]["epoch"] == "4"
    assert result["dropped"][0]["name"] == "optimizer_states"
    assert LocalFile.objects.filter(pk=result["output_file_id"], path=job.params["out"]).exists()
    convert_job_run(job_id=job.pk)  # a redelivered message: the finished job is left alone
    job.refresh_from_db()
    assert job.status == "done"


def test_job_stores_a_refusal_in_words_when_the_file_turned_hostile(model_root, user, tmp_path, sent_for_hashing):
    source = _checkpoint(model_root / "toad.ckpt")
    lf = _analysed(source, user)
    job = convert_job_create(owner=user, local_file=lf)
    hostile.zip_hidden_pickle(source, tmp_path / "CANARY")  # replaced after the job was queued
    convert_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "error" and "dangerous" in job.message
    assert job.result["verdict"] == "dangerous" and job.result["findings"]
    assert not (model_root / "toad.safetensors").exists()
    assert not list(model_root.glob(".*partial"))


def test_job_refuses_at_once_what_the_catalog_already_knows(model_root, user, tmp_path, sent_for_hashing):
    bad = hostile.zip_hidden_pickle(model_root / "bad.pt", tmp_path / "CANARY")
    lf = _analysed(bad, user)
    with pytest.raises(convert_service.ConvertError, match="dangerous"):
        convert_job_create(owner=user, local_file=lf)
    assert not Job.objects.exists()


# --- the API ------------------------------------------------------------------------------

@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_convert_returns_a_job(api, model_root, user, sent_for_hashing, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.convert_checkpoint_job, "delay", lambda job_id: None)
    lf = _analysed(_checkpoint(model_root / "toad.ckpt"), user)
    resp = api.post(f"/api/v1/files/{lf.pk}/convert/", {"dtype": "fp16"}, format="json")
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["kind"] == "convert" and body["status"] == "queued"
    assert body["params"]["out"] == str(model_root / "toad.fp16.safetensors")
    assert api.get(f"/api/v1/jobs/{body['id']}/").json()["id"] == body["id"]


def test_api_convert_errors_are_in_the_one_format(api, model_root, user, other_user, tmp_path, sent_for_hashing):
    lf = _analysed(_checkpoint(model_root / "toad.ckpt"), user)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    resp = api.post(f"/api/v1/files/{lf.pk}/convert/", {"out": str(outside / "x.safetensors")}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "path_refused"
    assert "outside the model roots" in resp.json()["error"]["message"]
    resp = api.post(f"/api/v1/files/{lf.pk}/convert/", {"dtype": "int4"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_input"
    bad = _analysed(hostile.zip_hidden_pickle(model_root / "bad.pt", tmp_path / "CANARY"), user)
    resp = api.post(f"/api/v1/files/{bad.pk}/convert/", {}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "not_convertible"
    assert resp.json()["error"]["detail"] == {"verdict": "dangerous"}
    theirs = LocalFile.objects.create(owner=other_user, origin="registered", path=str(model_root / "toad.ckpt"),
                                      name="toad.ckpt", status="done", format="torch-zip", safety_verdict="safe")
    resp = api.post(f"/api/v1/files/{theirs.pk}/convert/", {}, format="json")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert not Job.objects.exists()


def test_api_schema_documents_the_convert_route():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    op = schema["paths"]["/api/v1/files/{id}/convert/"]["post"]
    assert op["operationId"] == "files_convert" and {"202", "400", "404"} <= set(op["responses"])
    assert op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert set(schema["components"]["schemas"]["ConvertRequest"]["properties"]) == {
        "out", "dtype", "allow_suspicious", "original"}


# --- the web page ---------------------------------------------------------------------------

@pytest.fixture
def browser(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_file_page_offers_conversion_and_the_preview_shows_size_and_contents_first(browser, model_root, user,
                                                                                   sent_for_hashing):
    lf = _analysed(_checkpoint(model_root / "toad.ckpt"), user)
    assert f'href="/files/{lf.pk}/convert/"' in browser.get(f"/files/{lf.pk}/").content.decode()
    resp = browser.get(f"/files/{lf.pk}/convert/")
    page = resp.content.decode()
    assert resp.status_code == 200
    assert "What will be written" in page and "toad.safetensors" in page and "toad.fp16.safetensors" in page
    assert "<code>epoch</code>" in page and "optimizer_states" in page  # kept, and dropped
    assert 'name="csrfmiddlewaretoken"' in page and "Convert to safetensors" in page
    assert not (model_root / "toad.safetensors").exists()  # the preview writes nothing


def test_page_post_needs_csrf_and_queues_a_job(browser, model_root, user, sent_for_hashing, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.convert_checkpoint_job, "delay", lambda job_id: None)
    lf = _analysed(_checkpoint(model_root / "toad.ckpt"), user)
    assert browser.post(f"/files/{lf.pk}/convert/", {"dtype": "keep"}).status_code == 403
    assert not Job.objects.exists()
    page = browser.get(f"/files/{lf.pk}/convert/")
    token = page.cookies["csrftoken"].value
    resp = browser.post(f"/files/{lf.pk}/convert/", {"dtype": "keep", "csrfmiddlewaretoken": token})
    job = Job.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.pk}/"
    convert_job_run(job_id=job.pk)
    detail = browser.get(f"/jobs/{job.pk}/").content.decode()
    assert "Converted" in detail and "toad.safetensors" in detail and "optimizer_states" in detail


def test_page_for_a_hostile_file_shows_the_refusal_and_no_form(browser, model_root, user, tmp_path, sent_for_hashing):
    bad = _analysed(hostile.zip_hidden_pickle(model_root / "bad.pt", tmp_path / "CANARY"), user)
    assert f"/files/{bad.pk}/convert/" not in browser.get(f"/files/{bad.pk}/").content.decode()
    resp = browser.get(f"/files/{bad.pk}/convert/")
    page = resp.content.decode()
    assert resp.status_code == 400 and "dangerous" in page and "os.system" in page
    assert "Convert to safetensors</button>" not in page


def test_page_for_a_suspicious_file_asks_to_allow_it(browser, model_root, user, sent_for_hashing, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.convert_checkpoint_job, "delay", lambda job_id: None)
    path, _ = hostile.lightning_like_checkpoint(model_root / "l.ckpt", model_root.parent)
    lf = _analysed(path, user)
    page = browser.get(f"/files/{lf.pk}/convert/")
    assert "This file is suspicious" in page.content.decode() and "fake_lightning.ModelCheckpoint" in page.content.decode()
    token = page.cookies["csrftoken"].value
    resp = browser.post(f"/files/{lf.pk}/convert/", {"dtype": "keep", "csrfmiddlewaretoken": token})
    assert resp.status_code == 400 and "tick the box" in resp.content.decode() and not Job.objects.exists()
    resp = browser.post(f"/files/{lf.pk}/convert/", {"dtype": "keep", "allow_suspicious": "on",
                                                     "csrfmiddlewaretoken": token})
    assert resp.status_code == 302 and Job.objects.get().params["allow_suspicious"] is True


def test_another_users_file_has_no_convert_page(model_root, user, other_user, sent_for_hashing):
    lf = _analysed(_checkpoint(model_root / "toad.ckpt"), user)
    bob = Client()
    bob.force_login(other_user)
    assert bob.get(f"/files/{lf.pk}/convert/").status_code == 404
