"""A damaged model file through the whole pipeline (upload -> hashing -> analysis): the stored
verdict is `unreadable` and analysis_error says why in words a user can act on."""
import struct

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_catalog.models import LocalFile
from tests.workers.modelfiles import hostile
from tests.workers.modelfiles.builders import raw_safetensors

pytestmark = pytest.mark.django_db


def _cut_safetensors(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(raw_safetensors({"w": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}}, b"\x01" * 16))
    return path


def _short_storage_zip(tmp_path):
    entries = hostile.benign_zip_entries()
    entries[2] = ("archive/data/0", struct.pack("<2f", 1, 2))
    return hostile.torch_zip(tmp_path / "short.ckpt", entries)


@pytest.mark.parametrize("build, words", [
    (_cut_safetensors, "truncated: 16 of 64 data bytes present — an incomplete download?"),
    (_short_storage_zip, "storage '0' declares 16 bytes, file holds 8"),
])
def test_a_damaged_upload_is_stored_as_unreadable_with_the_reason(build, words, tmp_path, model_root, user,
                                                                  eager_celery, django_capture_on_commit_callbacks):
    path = build(tmp_path)
    client = Client()
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/upload/", {"file": SimpleUploadedFile(path.name, path.read_bytes())},
                           HTTP_ACCEPT="application/json")
    assert resp.status_code == 201, resp.content
    lf = LocalFile.objects.get(pk=resp.json()["id"])
    assert lf.status == "done", lf.error
    assert lf.safety_verdict == "unreadable", (lf.safety_findings, lf.analysis_error)
    assert words in lf.analysis_error
    assert "b'" not in lf.analysis_error and "Error" not in lf.analysis_error
    assert lf.fingerprint is None
    assert any(f["severity"] == "unreadable" for f in lf.safety_findings)
