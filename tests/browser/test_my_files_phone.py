"""My files and the file page in headless Chromium at phone width (390 px): nothing overflows sideways,
long names and 64-hex hashes wrap, copy buttons stay reachable; new files appear without a reload."""
from __future__ import annotations

import hashlib

import pytest
from playwright.sync_api import expect

from models_catalog.models import FileHashes, FolderMember, LocalFile, Match, SourceFile, SourceModel, SourceVersion

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LONG_NAME = "juggernautXL_juggXIByRundiffusion_v11_fp16_pruned-emaonly-with-baked-vae-and-a-very-long-suffix.safetensors"
LONG_FOLDER = "/data/models/Stable-diffusion/SDXL/checkpoints-downloaded-from-civitai-in-2026/very/deep/folder"


def _library(owner) -> dict[str, LocalFile]:
    model = SourceModel.objects.create(source="civitai", external_id="1", type="Checkpoint",
                                       name="Juggernaut XL — a photorealistic SDXL checkpoint with a long name")
    version = SourceVersion.objects.create(model=model, external_id="11", name="v11 Hyper (RunDiffusion) fp16 pruned",
                                           base_model="SDXL 1.0", trained_words=["juggernaut_style_trigger_word_long", "photo"])
    sf = SourceFile.objects.create(version=version, external_id="f", name="juggernautXL_v11.safetensors")
    out = {}
    for n, name in enumerate([LONG_NAME, "realisticVisionV60B1_v51HyperVAE.safetensors"]):
        digest = hashlib.sha256(name.encode()).hexdigest()
        lf = LocalFile.objects.create(owner=owner, origin="registered", path=f"{LONG_FOLDER}/{name}", name=name,
                                      size=6_938_040_682, status="done", safety_verdict="safe", format="safetensors",
                                      content_id="c" * 64, precision_id="d" * 64,
                                      fingerprint={"content_id": "c" * 64, "precision_id": "d" * 64, "tensors": 3,
                                                   "parameters": 12, "dtypes": {"F16": 3}, "components": {}})
        FileHashes.objects.create(local_file=lf, size=lf.size, sha256=digest, autov2=digest[:10], blake3=digest[::-1],
                                  autov3=digest[:12], autov3_full=digest, crc32=digest[:8],
                                  embedded_model_hash="0x" + digest)
        Match.objects.create(local_file=lf, source_file=sf, kind="renamed" if n else "exact",
                             evidence=f"SHA256 {digest.upper()} equal to juggernautXL_v11.safetensors")
        out[f"file{n}"] = lf
    out["broken"] = LocalFile.objects.create(
        owner=owner, origin="uploaded", path=f"{LONG_FOLDER}/cut-download.safetensors", name="cut-download.safetensors",
        size=1234, status="done", safety_verdict="unreadable",
        analysis_error="truncated: 16 of 64 data bytes present — an incomplete download?")
    folder = LocalFile.objects.create(owner=owner, origin="registered", path=f"{LONG_FOLDER}/sdxl-diffusers-folder",
                                      name="sdxl-diffusers-folder", is_folder=True, size=10, status="done",
                                      safety_verdict="safe", format="diffusers")
    FileHashes.objects.create(local_file=folder, size=10, folder_digest="e" * 64)
    FolderMember.objects.create(folder=folder, relative_path="text_encoder_2/model.fp16.safetensors-with-long-name",
                                size=10, sha256="f" * 64)
    out["folder"] = folder
    out["hashing"] = LocalFile.objects.create(
        owner=owner, origin="registered", path="/m/sd_xl_refiner_1.0_0.9vae.safetensors",
        name="sd_xl_refiner_1.0_0.9vae.safetensors", size=6_000_000_000, status="hashing",
        bytes_total=6_000_000_000, bytes_done=2_400_000_000)
    return out


def _width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def _too_wide(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(el => el.getBoundingClientRect().right > 390)
        .map(el => `${el.tagName}.${el.className}: right=${Math.round(el.getBoundingClientRect().right)}`).slice(0, 12)""")


def test_my_files_and_the_file_page_fit_a_390px_phone(signed_in_page, web_user, shot):
    files = _library(web_user)
    page = signed_in_page(**PHONE)
    page.goto("/")
    expect(page.locator("table.myfiles tbody tr")).to_have_count(5)
    expect(page.get_by_role("link", name=LONG_NAME)).to_be_visible()
    expect(page.locator("table.myfiles .badge.kind-exact")).to_have_text("exact copy")
    expect(page.locator("table.myfiles progress")).to_have_count(1)
    shot(page, "my-files")
    assert _width(page) <= 390, _too_wide(page)

    page.get_by_role("link", name=LONG_NAME).click()
    expect(page.get_by_role("heading", name="What it is")).to_be_visible()
    shot(page, "file-page")
    shot(page, "file-page-top", full_page=False)
    assert _width(page) <= 390, _too_wide(page)
    copy = page.get_by_role("button", name="Copy SHA256")
    copy.scroll_into_view_if_needed()
    shot(page, "file-page-hashes", full_page=False)
    box = copy.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390

    for key in ("broken", "folder"):
        page.goto(f"/files/{files[key].pk}/")
        shot(page, f"file-page-{key}")
        assert _width(page) <= 390, (key, _too_wide(page))
    expect(page.locator("table.members")).to_be_visible()


def test_a_file_registered_while_my_files_is_open_appears_without_a_reload(signed_in_page, web_user, shot):
    LocalFile.objects.create(owner=web_user, origin="registered", path="/m/busy.safetensors", name="busy.safetensors",
                             size=100, status="hashing", bytes_total=100, bytes_done=10)
    page = signed_in_page()
    page.goto("/")
    expect(page.get_by_role("link", name="busy.safetensors")).to_be_visible()
    # Add the row right after a poll answered, so the test thread never shares the DB with a request in flight.
    is_poll = lambda r: r.request.headers.get("hx-request") == "true" and "/files/" not in r.url  # noqa: E731
    with page.expect_response(is_poll, timeout=10_000):
        pass
    LocalFile.objects.create(owner=web_user, origin="registered", path="/m/new-arrival.safetensors",
                             name="new-arrival.safetensors", size=5, status="queued")
    expect(page.get_by_role("link", name="new-arrival.safetensors")).to_be_visible(timeout=10_000)
    shot(page, "new-row")
