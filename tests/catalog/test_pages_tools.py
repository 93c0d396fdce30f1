"""My files additions, duplicates (+ exports), Hugging Face jobs and API token pages."""
import csv
import io
import html
import json
import re
from datetime import timedelta

import pytest
from django.template.defaultfilters import filesizeformat
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from models_catalog.models import ApiToken, Job, LocalFile, Match
from models_catalog.services.tokens import api_token_create
from models_catalog.services.duplicates import duplicate_groups
from tests.factories import fp, login, page, seed_local, seed_model  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(user):
    return login(user)


# --- my files -----------------------------------------------------------------


def test_hashing_rate_is_shown_while_hashing(alice, user):
    rate = 3 * 1024 * 1024 // 2  # 1.5 MiB/s over 1000 s: a few ms of test time cannot change the shown value
    seed_local(user, "big.safetensors", status="hashing", bytes_done=rate * 1000, bytes_total=rate * 4000,
               stage_started_at=timezone.now() - timedelta(seconds=1000))
    expected = f"{filesizeformat(rate)}/s"
    assert expected in page(alice, "/")
    assert expected in page(alice, f"/files/{LocalFile.objects.get().pk}/")


def test_file_page_shows_safety_findings_format_fingerprint_matches_and_analysis_error(alice, user):
    _, _, (sf,) = seed_model("Evil Mix", files=[{"name": "evil.ckpt", "data": b"evil"}])
    findings = [{"severity": "dangerous", "what": "os.system", "where": "archive/data.pkl@120",
                 "why": "calls a shell command when unpickled"}]
    lf = seed_local(user, "evil.ckpt", data=b"evil", fmt="torch-zip", verdict="dangerous", safety_findings=findings,
                    fingerprint=fp("F32", content="c" * 64, precision="d" * 64),
                    analysis_error="not read further: the safety verdict is dangerous")
    Match.objects.create(local_file=lf, source_file=sf, kind="exact", evidence="SHA256 equal to evil.ckpt")
    html_ = page(alice, f"/files/{lf.pk}/")
    assert "verdict-dangerous" in html_ and "os.system" in html_ and "archive/data.pkl@120" in html_
    assert "calls a shell command when unpickled" in html_
    assert "torch-zip" in html_ and "c" * 64 in html_ and "d" * 64 in html_ and "F32 × 3" in html_ and "unet" in html_
    assert "exact copy" in html_ and "SHA256 equal to evil.ckpt" in html_ and "Evil Mix" in html_
    assert "not read further: the safety verdict is dangerous" in html_
    assert f'action="/files/{lf.pk}/forget/"' in html_


def test_unidentified_file_says_what_to_try(alice, user):
    lf = seed_local(user, "mystery.safetensors", data=b"mystery")
    assert "Not identified (yet)" in page(alice, f"/files/{lf.pk}/")


def test_forget_deletes_the_row_only(alice, user, tmp_path):
    on_disk = tmp_path / "keep.safetensors"
    on_disk.write_bytes(b"weights")
    lf = seed_local(user, "keep.safetensors", data=b"weights")
    LocalFile.objects.filter(pk=lf.pk).update(path=str(on_disk))
    assert alice.get(f"/files/{lf.pk}/forget/").status_code == 405
    resp = alice.post(f"/files/{lf.pk}/forget/")
    assert resp.status_code == 302 and resp["Location"] == "/"
    assert not LocalFile.objects.filter(pk=lf.pk).exists()
    assert on_disk.read_bytes() == b"weights"


def test_forget_needs_csrf_token(user):
    lf = seed_local(user, "a.safetensors")
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    assert c.post(f"/files/{lf.pk}/forget/").status_code == 403
    assert LocalFile.objects.filter(pk=lf.pk).exists()


# --- duplicates ---------------------------------------------------------------


@pytest.fixture
def dup_world(user):
    """The same model three times: a renamed exact copy, a .ckpt conversion, and an fp32 safetensors."""
    _, _, (sf,) = seed_model("Dup Model", files=[{"name": "dup.safetensors", "data": b"dup"}])
    keep16 = seed_local(user, "dup.safetensors", data=b"dup", fingerprint=fp("F16", content="C", precision="P"))
    copy = seed_local(user, "dup-copy.safetensors", data=b"dup", fingerprint=fp("F16", content="C", precision="P"))
    ckpt = seed_local(user, "dup.ckpt", data=b"dup-ckpt", fmt="torch-zip", fingerprint=fp("F16", content="C", precision="P"))
    f32 = seed_local(user, "dup-fp32.safetensors", data=b"dup-32", fingerprint=fp("F32", content="C32", precision="P"))
    Match.objects.create(local_file=keep16, source_file=sf, kind="exact", evidence="SHA256 equal")
    return {"keep16": keep16, "copy": copy, "ckpt": ckpt, "f32": f32}


def test_duplicates_empty_state(alice):
    assert "No duplicates among your finished files" in page(alice, "/duplicates/")


def test_duplicates_page_shows_members_keeper_and_reclaimable(alice, user, dup_world):
    (group,) = duplicate_groups(owner=user, prefer_precision="fp16")
    html_ = page(alice, "/duplicates/?prefer=fp16")
    for lf in dup_world.values():
        assert lf.path in html_ and f'href="/files/{lf.pk}/"' in html_
    assert filesizeformat(group.lossless_bytes) in html_ and filesizeformat(group.lossy_bytes) in html_
    assert html.escape(group.reason) in html_ and html.escape(group.warning) in html_ and group.warning
    assert "Dup Model" in html_ and "converted" in html_ and "precision variant" in html_ and "exact copy" in html_
    assert 'href="/duplicates/export.csv?prefer=fp16"' in html_ and 'href="/duplicates/export.json?prefer=fp16"' in html_
    assert "lossy" in html_ and "lossless" in html_


def test_duplicates_page_pages_through_many_groups(alice, user, settings, monkeypatch):
    from models_catalog import views_tools

    monkeypatch.setattr(views_tools, "GROUPS_PER_PAGE", 2)
    for i in range(3):
        for name in (f"g{i}.safetensors", f"g{i}-copy.safetensors"):
            seed_local(user, name, data=f"bytes-{i}".encode(), fingerprint=fp("F16", content=f"C{i}", precision=f"P{i}"))
    first = page(alice, "/duplicates/")
    assert first.count('<section class="dup-group">') == 2 and "groups 1–2 of 3" in first and 'rel="next"' in first
    second = page(alice, "/duplicates/?prefer=lossless&page=2")
    assert second.count('<section class="dup-group">') == 1 and 'rel="prev"' in second


def test_duplicates_page_keeps_the_full_precision_copy_by_default(alice, user, dup_world):
    html_ = page(alice, "/duplicates/")
    keeper_row = html_.split('class="keep')[1].split("</tr>")[0]
    assert dup_world["f32"].path in keeper_row and 'role="alert"' not in html_


@pytest.mark.parametrize("prefer,keeper", [("fp16", "keep16"), ("fp32", "f32")])
def test_duplicates_csv_export_follows_precision_choice(alice, user, dup_world, prefer, keeper):
    resp = alice.get("/duplicates/export.csv", {"prefer": prefer})
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    assert "attachment" in resp["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.getvalue().decode())))
    assert {r["path"] for r in rows} == {lf.path for lf in dup_world.values()}
    assert [r["path"] for r in rows if r["keep"] == "yes"] == [dup_world[keeper].path]
    assert {r["precision"] for r in rows} == {"fp16", "fp32"}


def test_duplicates_json_export_is_the_service_result(alice, user, dup_world):
    resp = alice.get("/duplicates/export.json", {"prefer": "fp32"})
    body = json.loads(resp.getvalue())
    groups = duplicate_groups(owner=user, prefer_precision="fp32")
    assert body["groups"] == [g.to_json() for g in groups]
    assert body["reclaimable_bytes"] == sum(g.reclaimable_bytes for g in groups) > 0


def test_duplicates_csv_cell_cannot_become_a_formula(alice, user):
    for name in ("=HYPERLINK(1).safetensors", "b.safetensors"):
        seed_local(user, name, data=b"same")
    rows = list(csv.DictReader(io.StringIO(alice.get("/duplicates/export.csv").getvalue().decode())))
    assert "'=HYPERLINK(1).safetensors" in {r["name"] for r in rows}


# --- Hugging Face -------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch):
    """Record task enqueues instead of running them."""
    from workers import tasks

    calls = []
    monkeypatch.setattr(tasks.hf_index_repo, "delay", lambda job_id: calls.append(("index", job_id)))
    monkeypatch.setattr(tasks.hf_verify_local_dir, "delay", lambda job_id: calls.append(("verify", job_id)))
    return calls


def test_hf_page_empty_state(alice):
    html_ = page(alice, "/hf/")
    assert "No jobs yet" in html_ and 'action="/hf/index/"' in html_ and 'action="/hf/verify/"' in html_
    assert "hx-trigger" not in html_


def test_index_form_creates_job_and_enqueues_after_commit(alice, user, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        resp = alice.post("/hf/index/", {"index-repo_id": "https://huggingface.co/stabilityai/sdxl-vae",
                                         "index-revision": "", "index-repo_type": "model"})
    assert resp.status_code == 302
    job = Job.objects.get()
    assert job.owner == user and job.kind == "hf_index"
    assert job.params == {"repo_id": "stabilityai/sdxl-vae", "revision": None, "repo_type": "model"}
    assert enqueued == [("index", job.pk)]


@pytest.mark.parametrize("repo_id", ["", "a/b/c", "../etc", "has space/x"])
def test_index_form_refuses_bad_repo_ids(alice, enqueued, repo_id):
    resp = alice.post("/hf/index/", {"index-repo_id": repo_id, "index-repo_type": "model"})
    assert resp.status_code == 400 and 'class="error-text"' in resp.content.decode()
    assert not Job.objects.exists() and not enqueued


def test_verify_form_refuses_paths_outside_the_roots(alice, model_root, tmp_path, enqueued):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (model_root / "escape").symlink_to(outside)
    for path in (str(outside), str(model_root / "escape"), str(model_root / ".." / "elsewhere")):
        resp = alice.post("/hf/verify/", {"verify-repo_id": "org/repo", "verify-repo_type": "model", "verify-local_dir": path})
        assert resp.status_code == 400 and "outside the model roots" in resp.content.decode()
    # A path outside the roots is refused without saying whether it exists or where it leads.
    resp = alice.post("/hf/verify/", {"verify-repo_id": "org/repo", "verify-repo_type": "model",
                                      "verify-local_dir": str(outside / "nothing-here")})
    assert "no such file" not in resp.content.decode() and "outside the model roots" in resp.content.decode()
    assert not Job.objects.exists() and not enqueued


def test_verify_form_creates_job_for_folder_under_root(alice, user, model_root, enqueued, django_capture_on_commit_callbacks):
    folder = model_root / "sdxl-vae"
    folder.mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        resp = alice.post("/hf/verify/", {"verify-repo_id": "org/sdxl-vae", "verify-repo_type": "model",
                                          "verify-revision": "main", "verify-local_dir": str(folder)})
    job = Job.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.pk}/"
    assert job.params["local_dir"] == str(folder.resolve()) and job.params["revision"] == "main"
    assert enqueued == [("verify", job.pk)]


def test_jobs_list_polls_only_while_unfinished(alice, user):
    job = Job.objects.create(owner=user, kind="hf_index", params={"repo_id": "org/x"}, status="running",
                             progress_done=3, progress_total=4, message="asking the Hub")
    html_ = page(alice, "/hf/")
    assert 'hx-trigger="every 2s"' in html_ and "75%" in html_ and "asking the Hub" in html_
    partial = alice.get("/hf/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="jobs"') and "<html" not in partial
    Job.objects.filter(pk=job.pk).update(status="done", message="indexed 4 files")
    html_ = page(alice, "/hf/")
    assert "hx-trigger" not in html_ and "indexed 4 files" in html_


def test_job_page_shows_verify_report(alice, user):
    result = {"revision": "a" * 40, "exit_status": 1, "matched": ["vae/config.json"],
              "mismatched": [{"path": "vae/diffusion_pytorch_model.safetensors", "expected": "e" * 64, "actual": "f" * 64,
                              "reason": "hash", "expected_size": None, "actual_size": None}],
              "missing": ["README.md"], "extra": ["notes.txt"], "refused": [], "skipped_rehash": 0, "hashed_bytes": 10}
    job = Job.objects.create(owner=user, kind="hf_verify", status="done", result=result,
                             params={"repo_id": "org/x", "local_dir": "/m/x"}, message="1 matched, 1 mismatched, 1 missing, 1 extra")
    html_ = page(alice, f"/jobs/{job.pk}/")
    for text in ("vae/config.json", "vae/diffusion_pytorch_model.safetensors", "e" * 64, "f" * 64, "README.md", "notes.txt",
                 "1 mismatched", "1 missing", "1 extra", "1 matched", "a" * 40):
        assert text in html_
    assert "hx-trigger" not in html_


def test_running_job_page_polls(alice, user):
    job = Job.objects.create(owner=user, kind="hf_verify", status="running", params={"repo_id": "org/x"})
    assert 'hx-trigger="every 2s"' in page(alice, f"/jobs/{job.pk}/")
    partial = alice.get(f"/jobs/{job.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<section id="job-status"')


# --- API tokens ---------------------------------------------------------------


def test_tokens_page_shows_a_new_key_once_then_only_its_prefix(alice, user):
    html_ = page(alice, "/tokens/")
    assert "no API token yet" in html_ and 'href="/api/docs/"' in html_
    resp = alice.post("/tokens/", {"action": "create", "name": "gpu box"})
    assert resp.status_code == 200 and "no-store" in resp["Cache-Control"]
    token = ApiToken.objects.get(user=user)
    key = re.search(r'<code id="token">([^<]+)</code>', resp.content.decode()).group(1)
    assert f'curl -H "Authorization: Token {key}" http://testserver/api/v1/files/' in resp.content.decode()
    assert "shown only this once" in resp.content.decode()
    later = page(alice, "/tokens/")
    assert key not in later and f"{token.prefix}…" in later and "gpu box" in later
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert script.get("/api/v1/files/").status_code == 200


def test_tokens_page_revokes_only_the_viewers_own_token(alice, user, other_user):
    mine, _ = api_token_create(user=user)
    theirs, _ = api_token_create(user=other_user)
    assert alice.post("/tokens/", {"action": "revoke", "token": theirs.pk}).status_code == 302
    assert ApiToken.objects.filter(pk=theirs.pk).exists()
    assert other_user.username not in page(alice, "/tokens/")
    alice.post("/tokens/", {"action": "revoke", "token": mine.pk})
    assert not ApiToken.objects.filter(user=user).exists()


def test_tokens_page_needs_csrf(user):
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    assert c.post("/tokens/", {"action": "create"}).status_code == 403
    assert not ApiToken.objects.exists()
