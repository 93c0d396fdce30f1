"""A file page in headless Chromium shows its version's preview, and blurs the NSFW one until it is clicked."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from models_catalog.models import LocalFile, Match, SourceFile, SourceImage, SourceModel, SourceVersion
from models_catalog.services.previews import thumb_write
from tests.fakes.civitai import generated_image
from workers.sources.images import thumbnail_make

pytestmark = pytest.mark.browser


def _identified_lora(owner) -> LocalFile:
    model = SourceModel.objects.create(source="civitai", external_id="7", type="LORA", name="Blue Style")
    version = SourceVersion.objects.create(model=model, external_id="70", name="v1", trained_words=["bluestyle"])
    sf = SourceFile.objects.create(version=version, external_id="f", name="blue_style.safetensors")
    for position, (level, color) in enumerate([(1, (30, 90, 220)), (16, (220, 40, 40))]):
        name = thumb_write(thumbnail_make(generated_image(width=300, height=400, color=color)).data)
        SourceImage.objects.create(version=version, position=position, url=f"https://image.civitai.com/{position}.jpeg",
                                   nsfw_level=level, width=300, height=400, state="done", thumb_name=name,
                                   blurhash="LEHV6nWB2yk8pyo0adR*.7kCMdnj")
    lf = LocalFile.objects.create(owner=owner, origin="registered", path="/m/blue_style.safetensors",
                                  name="blue_style.safetensors", size=10, status="done", safety_verdict="safe")
    Match.objects.create(local_file=lf, source_file=sf, kind="exact", evidence="SHA256 equal")
    return lf


def test_preview_shown_and_nsfw_blurred_until_clicked(signed_in_page, web_user, browser_data, settings, shot):
    settings.PREVIEW_DIR = browser_data / "previews"
    lf = _identified_lora(web_user)
    page = signed_in_page()
    page.goto(f"/files/{lf.pk}/")
    figures = page.locator(".previews figure.preview")
    expect(figures).to_have_count(2)
    safe, nsfw = figures.nth(0), figures.nth(1)
    for figure in (safe, nsfw):  # both thumbnails really loaded through the login-checked view
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.locator("img").element_handle())
    assert "blur" not in safe.locator("img").evaluate("img => getComputedStyle(img).filter")
    assert "blur" in nsfw.locator("img").evaluate("img => getComputedStyle(img).filter")
    # Until clicked, the NSFW one is its blurhash (32 x 32): the image itself is not even fetched.
    assert nsfw.locator("img").evaluate("img => [img.src.endsWith('/blur.png'), img.naturalWidth]") == [True, 32]
    expect(page.locator("[data-usage=a1111]")).to_have_attribute("data-copy", "<lora:blue_style:1>, bluestyle")
    shot(page, "blurred")
    nsfw.click()
    expect(nsfw).not_to_have_class("preview nsfw-blur")
    assert nsfw.locator("img").evaluate("img => getComputedStyle(img).filter") == "none"
    page.wait_for_function("img => img.complete && img.naturalWidth > 32", arg=nsfw.locator("img").element_handle())
    assert nsfw.locator("img").evaluate("img => img.src").endswith(".webp")
    shot(page, "shown")


def test_my_files_row_has_a_cover_thumbnail_and_usage_buttons_at_phone_width(signed_in_page, web_user, browser_data,
                                                                            settings, shot):
    settings.PREVIEW_DIR = browser_data / "previews"
    _identified_lora(web_user)
    page = signed_in_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto("/")
    thumb = page.locator("#file-rows img.row-thumb")
    expect(thumb).to_have_count(1)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    expect(page.locator("#file-rows [data-usage=a1111]")).to_have_attribute("data-copy", "<lora:blue_style:1>, bluestyle")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "my-files")
