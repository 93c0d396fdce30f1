"""Uploaded models are stored where only the account that runs ModelXRef can read them."""
import stat
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_catalog.services import upload as upload_service
from models_catalog.services.upload import local_file_upload


@pytest.mark.django_db
def test_uploaded_files_are_readable_by_the_owner_account_only(model_root, user, monkeypatch):
    monkeypatch.setattr(upload_service, "enqueue_hashing", lambda _id: None)
    lf = local_file_upload(uploaded=SimpleUploadedFile("m.safetensors", b"x" * 64), owner=user).local_file
    assert stat.S_IMODE(Path(lf.path).stat().st_mode) == 0o600 and stat.S_IMODE(Path(lf.path).parent.stat().st_mode) == 0o700
