"""export_sidecars: Civitai Helper's `.civitai.info` beside identified files, read back by the import
path; never outside the roots, never through a link, never over a newer user file without --force."""
import json
import os
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from models_catalog.services import sidecar_export
from models_catalog.services.identify import (
    civitai_batch_and_rematch,
    local_file_identify,
)
from models_catalog.services.sidecar_export import sidecars_export
from tests.model_builders import write_safetensors
from tests.factories import civitai_file, client_for, hashed, seed  # noqa: F401
from tests.fakes.civitai import fake_civitai  # noqa: F401
from workers.sources.local_sidecars import find_sidecar_hashes, parse_civitai_info

pytestmark = pytest.mark.django_db

# What SD Civitai Helper reads from a .civitai.info (scripts/ch_lib: model_info["trainedWords"], ["model"]["name"],
# ["images"][0]["url"], files[].hashes.SHA256 ...): the by-hash version JSON it saves with json.dumps(indent=4).
CIVITAI_HELPER_TOP = {"id", "modelId", "name", "trainedWords", "baseModel", "description", "model", "files",
                      "images", "downloadUrl"}
CIVITAI_HELPER_FILE = {"id", "name", "sizeKB", "type", "metadata", "hashes", "primary", "downloadUrl"}


@pytest.fixture
def identified(civitai, model_root, user):
    """Two identified LoRAs (one renamed) in model_root/lora, one unknown file beside them."""
    folder = model_root / "lora"
    folder.mkdir()
    a = write_safetensors(folder / "style.safetensors", payload=b"S" * 100)
    b = write_safetensors(folder / "my_renamed.safetensors", payload=b"R" * 100)
    write_safetensors(folder / "unknown.safetensors", payload=b"U" * 100)
    # Civitai's sizeKB is the file's size (the stand-in's default is not): the import checks it.
    seed(civitai, [civitai_file(a.read_bytes(), "style.safetensors") | {"sizeKB": a.stat().st_size / 1024}],
         name="Style LoRA")
    seed(civitai, [civitai_file(b.read_bytes(), "original_name.safetensors") | {"sizeKB": b.stat().st_size / 1024}],
         name="Renamed LoRA")
    files = [hashed(p, user) for p in (a, b, folder / "unknown.safetensors")]
    for lf in files:
        local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    return folder, files


def test_export_writes_civitai_helper_info_that_the_import_reads_back(identified, user):
    folder, files = identified
    outcome = sidecars_export(owner=user, folder=folder)
    assert outcome.error == "" and outcome.written == 2 and outcome.skipped == 0
    info = folder / "style.civitai.info"
    data = json.loads(info.read_text())
    assert CIVITAI_HELPER_TOP <= set(data) and CIVITAI_HELPER_FILE <= set(data["files"][0])
    assert data["model"]["name"] == "Style LoRA" and data["trainedWords"] == ["fakeword"]
    assert info.read_text().startswith('{\n    "id"')  # indent 4, as Civitai Helper writes it
    assert not (folder / "unknown.civitai.info").exists()

    found, errors = find_sidecar_hashes(folder)  # the import path
    by_name = {f.model_path.name: f for f in found}
    assert errors == [] and set(by_name) == {"style.safetensors", "my_renamed.safetensors"}
    for lf in files[:2]:
        lf.refresh_from_db()
        back = by_name[lf.name]
        assert back.sha256 == lf.hashes.sha256 and back.size == lf.size
        version = lf.matches.get().source_file.version
        assert back.civitai_version_id == int(version.external_id)
        assert back.civitai_model_id == int(version.model.external_id)
    assert parse_civitai_info(folder / "my_renamed.civitai.info").sha256 == files[1].hashes.sha256


def test_export_refuses_a_folder_outside_the_roots(identified, user, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    outcome = sidecars_export(owner=user, folder=outside)
    assert "outside the model roots" in outcome.error and outcome.results == []
    with pytest.raises(CommandError, match="outside the model roots"):
        call_command("export_sidecars", str(outside), "--user", user.username, stdout=StringIO())


def test_export_never_writes_through_a_symlinked_sidecar(identified, user, tmp_path):
    folder, _ = identified
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / "style.civitai.info").symlink_to(victim)
    outcome = sidecars_export(owner=user, folder=folder, force=True)
    by_name = {os.path.basename(r.path): r for r in outcome.results}
    assert by_name["style.civitai.info"].action == "skipped" and "symbolic link" in by_name["style.civitai.info"].why
    assert victim.read_text() == "precious" and (folder / "style.civitai.info").is_symlink()
    assert by_name["my_renamed.civitai.info"].action == "written"


def test_export_skips_a_model_file_swapped_for_a_symlink(identified, user, tmp_path):
    folder, files = identified
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    style = folder / "style.safetensors"
    os.replace(style, elsewhere / "style.safetensors")
    style.symlink_to(elsewhere / "style.safetensors")
    outcome = sidecars_export(owner=user, folder=folder)
    result = next(r for r in outcome.results if r.path.endswith("style.civitai.info"))
    assert result.action == "skipped" and "symbolic link" in result.why
    assert not (elsewhere / "style.civitai.info").exists() and not (folder / "style.civitai.info").exists()


def test_a_newer_user_file_is_kept_without_force(identified, user):
    folder, _ = identified
    mine = folder / "style.civitai.info"
    time.sleep(0.01)
    mine.write_text('{"id": 1, "note": "my own edits"}')
    older = folder / "my_renamed.civitai.info"
    older.write_text("{}")
    os.utime(older, (1_000_000_000, 1_000_000_000))  # written long before ModelXRef heard from Civitai
    out = StringIO()
    call_command("export_sidecars", str(folder), "--user", user.username, stdout=out)
    assert "my own edits" in mine.read_text() and "--force replaces it" in out.getvalue()
    assert json.loads(older.read_text())["model"]["name"] == "Renamed LoRA"
    assert "1 written, 1 skipped" in out.getvalue()
    out = StringIO()
    call_command("export_sidecars", str(folder), "--user", user.username, "--dry-run", "--force", stdout=out)
    assert "would write" in out.getvalue() and "my own edits" in mine.read_text()
    call_command("export_sidecars", str(folder), "--user", user.username, "--force", stdout=StringIO())
    assert json.loads(mine.read_text())["model"]["name"] == "Style LoRA"
    leftovers = [p.name for p in folder.iterdir() if ".mxr-" in p.name]
    assert leftovers == []


def test_a_stored_preview_is_written_beside_the_file(identified, user, tmp_path, monkeypatch):
    folder, _ = identified
    thumb = tmp_path / "thumb.png"
    thumb.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    monkeypatch.setattr(sidecar_export, "preview_for_version", lambda version: thumb)
    sidecars_export(owner=user, folder=folder)
    assert (folder / "style.preview.png").read_bytes() == thumb.read_bytes()


def test_the_folder_button_on_my_files_exports_with_csrf(identified, user):
    folder, _ = identified
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get("/", {"folder": str(folder)}).content.decode()
    assert "Write .civitai.info sidecars" in page
    token = client.cookies["csrftoken"].value
    response = client.post("/files/export-sidecars/", {"folder": str(folder), "csrfmiddlewaretoken": token}, follow=True)
    assert "2 sidecars written" in response.content.decode()
    assert (folder / "style.civitai.info").exists()
    assert client.post("/files/export-sidecars/", {"folder": str(folder)}).status_code == 403  # no token


def test_the_tamest_downloaded_thumbnail_becomes_the_preview_png(identified, user, settings, tmp_path):
    from PIL import Image

    from models_catalog.models import SourceImage, SourceVersion

    folder, files = identified
    settings.PREVIEW_DIR = tmp_path / "previews"
    settings.PREVIEW_DIR.mkdir()
    version = SourceVersion.objects.get(files__matches__local_file=files[0])
    for position, (level, colour) in enumerate([(4, "red"), (1, "blue")]):
        Image.new("RGB", (8, 8), colour).save(settings.PREVIEW_DIR / f"t{position}.webp", format="WEBP", lossless=True)
        SourceImage.objects.create(version=version, position=position, url=f"https://image.civitai.com/{position}.png",
                                   nsfw_level=level, state=SourceImage.State.DONE, thumb_name=f"t{position}.webp")
    sidecars_export(owner=user, folder=folder)
    with Image.open(folder / "style.preview.png") as written:
        assert written.format == "PNG" and written.convert("RGB").getpixel((0, 0)) == (0, 0, 255)  # the PG one
