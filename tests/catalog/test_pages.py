import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_catalog.models import LocalFile

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_alice(user):
    c = Client()
    c.force_login(user)
    return c


def _row(owner, name="a.safetensors", **kw):
    return LocalFile.objects.create(owner=owner, origin="registered", path=f"/m/{owner.username}/{name}", name=name, **kw)


def test_pages_require_login(client):
    assert client.get("/").status_code == 302
    assert client.get("/upload/").status_code == 302


def test_list_shows_only_my_files(client_alice, user, other_user):
    _row(user, "mine.safetensors")
    _row(other_user, "theirs.safetensors")
    html = client_alice.get("/").content.decode()
    assert "mine.safetensors" in html and "theirs.safetensors" not in html


def test_empty_list_tells_what_to_do(client_alice):
    html = client_alice.get("/").content.decode()
    assert "No model files yet" in html and "manage.py register" in html


def test_other_users_file_is_404(client_alice, other_user):
    theirs = _row(other_user)
    assert client_alice.get(f"/files/{theirs.pk}/").status_code == 404


def test_pending_list_polls_quickly_and_a_finished_first_page_slowly_for_new_rows(client_alice, user):
    lf = _row(user, status="hashing", bytes_total=100, bytes_done=40)
    html = client_alice.get("/").content.decode()
    assert 'hx-trigger="every 2s"' in html and "40%" in html
    LocalFile.objects.filter(pk=lf.pk).update(status="done")
    html = client_alice.get("/").content.decode()
    assert 'hx-trigger="every 2s"' not in html and 'hx-trigger="every 10s"' in html


def test_htmx_request_gets_only_the_rows_and_the_pager(client_alice, user):
    _row(user)
    html = client_alice.get("/", HTTP_HX_REQUEST="true").content.decode()
    assert html.lstrip().startswith('<div id="file-results"') and "<tbody" in html and "<html" not in html


def test_detail_shows_hashes_in_civitai_form_with_copy_buttons(client_alice, user):
    from models_catalog.models import FileHashes

    lf = _row(user, status="done", size=11)
    FileHashes.objects.create(local_file=lf, size=11, sha256="b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
                              autov2="b94d27b993", crc32="85114a0d")
    html = client_alice.get(f"/files/{lf.pk}/").content.decode()
    assert "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9" in html
    assert 'data-copy="85114A0D"' in html and "hx-trigger" not in html


def test_error_is_explained_on_the_page(client_alice, user):
    lf = _row(user, status="error", error="the file is gone: it was moved or deleted after it was registered")
    assert "moved or deleted" in client_alice.get(f"/files/{lf.pk}/").content.decode()


def test_upload_stores_clean_name_and_runs_pipeline(client_alice, model_root, eager_celery, django_capture_on_commit_callbacks):
    from tests.model_builders import write_safetensors

    f = write_safetensors(model_root / "x", payload=b"\x07" * 64)
    upload = SimpleUploadedFile("../../etc/evil\x00\x1b[31m.safetensors", f.read_bytes())
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_alice.post("/upload/", {"file": upload}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 201, resp.content
    lf = LocalFile.objects.get(pk=resp.json()["id"])
    assert lf.name == "evil[31m.safetensors"
    assert lf.path.startswith(str(model_root.parent / "data" / "uploads"))
    assert lf.status == "done" and lf.hashes.size == 64 + f.stat().st_size - 64


def test_upload_over_limit_is_refused_and_nothing_stored(client_alice, model_root, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    resp = client_alice.post("/upload/", {"file": SimpleUploadedFile("big.safetensors", b"x" * 200_000)}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 413 and "limit" in resp.json()["error"]
    assert not LocalFile.objects.exists()
    assert not any((model_root.parent / "data" / "uploads").iterdir())


def test_upload_needs_csrf_token(user, model_root):
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    resp = c.post("/upload/", {"file": SimpleUploadedFile("a.safetensors", b"abc")})
    assert resp.status_code == 403 and not LocalFile.objects.exists()


def test_upload_without_file_explains(client_alice, model_root):
    resp = client_alice.post("/upload/", {}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 400 and "no file" in resp.json()["error"]


def test_upload_over_limit_is_stopped_while_streaming(client_alice, model_root, settings):
    # Declared length passes the up-front check; the streaming handler must stop it.
    settings.MAX_UPLOAD_BYTES = 100_000
    resp = client_alice.post("/upload/", {"file": SimpleUploadedFile("big.safetensors", b"x" * 150_000)}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 413
    assert not LocalFile.objects.exists()
