"""Every hostile file class through the whole pipeline (upload -> hashing -> analysis -> identify):
the verdict is stored and shown, and the payload never ran (no canary file)."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_catalog.models import LocalFile
from tests.workers.modelfiles.hostile import HOSTILE

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_upload_is_flagged_and_never_executed(name, tmp_path, model_root, user, eager_celery,
                                                     django_capture_on_commit_callbacks):
    build, expected = HOSTILE[name]
    canary = tmp_path / "canary"
    path = build(tmp_path / f"{name}.bin", canary)
    client = Client()
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/upload/", {"file": SimpleUploadedFile(path.name, path.read_bytes())}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 201, resp.content
    lf = LocalFile.objects.get(pk=resp.json()["id"])
    assert lf.status == "done", lf.error
    assert lf.safety_verdict == expected, lf.safety_findings
    assert lf.safety_findings, "a verdict other than safe must come with findings"
    assert lf.fingerprint is None  # a dangerous or unreadable file is never read further
    page = client.get(f"/files/{lf.pk}/").content.decode()
    assert expected in page
    assert not canary.exists()
