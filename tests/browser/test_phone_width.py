"""Every HTML page at phone width (390 x 844), filled with the longest names and hashes the app meets.

Nothing may push the page sideways: `document.documentElement.scrollWidth`
stays within the 390 px viewport. When a page is too wide, the message names
the elements that stick out (the widest one, and the outermost ones that
break out of their container), so the failure says what to fix.

Each page is saved as test-output/screenshots/every_page_fits_a_phone-<page>.png.
"""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from models_catalog.models import (
    CivitaiLookup, FileHashes, FolderMember, Job, LocalFile, Match, SourceFile, SourceModel, SourceVersion,
)
from tests.browser.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
PHONE_WIDTH = PHONE["viewport"]["width"]

# A user name with no space to break at: it shows in the nav's "Sign out (...)" button.
USERNAME = "carol.the.model.collector@example-studio.com"

# 200 characters without a space, as real checkpoint names get when every merge step is in the name.
LONG_NAME = ("juggernautXL_juggXIByRundiffusion_v11_fp16_pruned-emaonly-with-baked-vae_"
             "merged-with-realisticVisionV60B1_v51HyperVAE_x_dreamshaperXL_alpha2Xl10_"
             "0.35-weighted-sum_final_v3").ljust(188, "X") + ".safetensors"
assert len(LONG_NAME) == 200 and " " not in LONG_NAME


def hex64(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


# What the overflow check runs in the page: the widest element, and the outermost ones that stick out
# (an element whose parent still fits is where the overflow starts). Elements inside a scrolling or
# clipping container do not widen the page and are left out.
FIND_OVERFLOW = """(limit) => {
  const clipped = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") return true;
    }
    return false;
  };
  // A long word can stick out of a block whose own box fits: measure text too, and blame its element.
  const right = (el) => {
    let r = el.getBoundingClientRect().right;
    if (getComputedStyle(el).overflowX !== "visible") return r;  // its own text is clipped (an ellipsis)
    for (const node of el.childNodes) {
      if (node.nodeType !== Node.TEXT_NODE || !node.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      r = Math.max(r, range.getBoundingClientRect().right);
    }
    return r;
  };
  const describe = (el) => {
    const cls = typeof el.className === "string" && el.className.trim()
      ? "." + el.className.trim().split(/\\s+/).join(".") : "";
    const text = (el.innerText || el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 60);
    return `<${el.tagName.toLowerCase()}${cls}> right=${Math.round(right(el))} "${text}"`;
  };
  const over = [...document.body.querySelectorAll("*")]
    .filter((el) => right(el) > limit + 0.5 && !clipped(el));
  if (!over.length) return "no element or text is wider than the viewport";
  const widest = over.reduce((a, b) => (right(b) > right(a) ? b : a));
  const roots = over.filter((el) => !over.includes(el.parentElement));
  return `widest ${describe(widest)}; breaking out: ` + roots.slice(0, 6).map(describe).join(" | ");
}"""


def _overflow(page) -> str | None:
    width = page.evaluate("document.documentElement.scrollWidth")
    if width <= PHONE_WIDTH:
        return None
    return f"{width} px wide: {page.evaluate(FIND_OVERFLOW, PHONE_WIDTH)}"


def _hostile_library(user) -> dict[str, int]:
    """Rows for every page to show, with the longest values each field really takes."""
    now = timezone.now()
    sha, blake3, autov3_full = hex64("sha"), hex64("blake3"), hex64("autov3")
    big = LocalFile.objects.create(
        owner=user, origin="registered", name=LONG_NAME, size=6_938_040_682, status="done", format="safetensors",
        path="/srv/models/Stable-diffusion/SDXL/merges/experimental_2024-11_block-weighted/" + LONG_NAME,
        safety_verdict="suspicious", content_id=hex64("content"), precision_id=hex64("precision"),
        safety_findings=[{"severity": "suspicious", "what": "collections.OrderedDict_with_a_custom_subclass_"
                          "torch._utils._rebuild_parameter_with_state_v2", "where": "archive/data.pkl@0x00012F4A",
                          "why": "an unknown but inert global: it cannot run code, yet it is not on the allowlist"}],
        fingerprint={"content_id": hex64("content"), "precision_id": hex64("precision"), "tensors": 2516,
                     "parameters": 3_468_838_916, "nbytes": 6_938_040_682, "dtypes": {"F16": 2515, "F32": 1},
                     "components": {
                         "conditioner.embedders.1.model.transformer.resblocks": {
                             "tensors": 517, "parameters": 694_659_841, "nbytes": 1_389_319_682},
                         "model.diffusion_model": {"tensors": 1680, "parameters": 2_567_463_684,
                                                   "nbytes": 5_134_927_368}}},
    )
    FileHashes.objects.create(local_file=big, size=big.size, sha256=sha, autov1="0f1e2d3c", autov2=sha[:10],
                              autov3=autov3_full[:12], autov3_full=autov3_full, crc32="9a8b7c6d", blake3=blake3,
                              embedded_model_hash="0x" + hex64("embedded"))
    copy = LocalFile.objects.create(
        owner=user, origin="uploaded", name="copy-of-" + LONG_NAME[:180] + ".safetensors", size=big.size,
        path="/var/lib/modelxref/uploads/2024/11/28/" + "copy-of-" + LONG_NAME, status="done",
        format="safetensors", safety_verdict="safe", content_id=big.content_id, precision_id=big.precision_id,
        fingerprint=big.fingerprint)
    FileHashes.objects.create(local_file=copy, size=copy.size, sha256=sha, autov2=sha[:10], blake3=blake3)
    folder = LocalFile.objects.create(
        owner=user, origin="pushed", host="render-node-07.studio-internal.example.com", is_folder=True,
        name="stable-diffusion-xl-base-1.0_diffusers_fp16_variant_with_refiner_and_custom_scheduler_config",
        path="/home/render/.cache/huggingface/hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/"
             + hex64("commit")[:40], size=13_875_000_000, status="done", format="diffusers", safety_verdict="safe")
    FileHashes.objects.create(local_file=folder, size=folder.size, folder_digest=hex64("folder"), source="pushed")
    for part in ("text_encoder_2/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                 "vae_1_0/diffusion_pytorch_model.fp16.safetensors"):
        FolderMember.objects.create(folder=folder, relative_path=part, size=1_389_319_682, sha256=hex64(part))
    LocalFile.objects.create(owner=user, origin="registered", name="sd_xl_refiner_1.0_0.9vae.safetensors",
                             path="/srv/models/sd_xl_refiner_1.0_0.9vae.safetensors", size=6_000_000_000,
                             status="hashing", bytes_total=6_000_000_000, bytes_done=2_400_000_000,
                             stage_started_at=now - timedelta(seconds=20))
    LocalFile.objects.create(owner=user, origin="registered", name="broken_" + LONG_NAME[:100] + ".ckpt",
                             path="/srv/models/broken.ckpt", status="error",
                             error="not a model file: the first 8 bytes (0x504B0304FFFFFFFF) are a ZIP header "
                                   "whose central directory at offset 0x1F3A7C2B lies beyond the end of the file")
    CivitaiLookup.objects.create(kind="SHA256", value=sha.upper(), state="error", attempts=3, checked_at=now,
                                 duration_ms=30_012, last_error="HTTPSConnectionPool(host='civitai.com', port=443): "
                                 "Read timed out. (read timeout=30)")
    CivitaiLookup.objects.create(kind="BLAKE3", value=blake3.upper(), state="pending", not_before=now)

    civitai = SourceModel.objects.create(
        source="civitai", external_id="133005", type="Checkpoint", url="https://civitai.com/models/133005",
        name="Juggernaut_XL_RunDiffusion_Photo_Realistic_Cinematic_Ultra_Detailed_8K_Masterpiece_Edition_"
             "by_KandooAI_and_RunDiffusion_(SDXL_1.0_finetune_with_baked_VAE)")
    version = SourceVersion.objects.create(
        model=civitai, external_id="1759168", base_model="SDXL 1.0", published_at=now,
        name="Juggernaut_XL_Ragnarok_by_RunDiffusion_v11_fp16_pruned_with_baked_vae_final_release",
        air="urn:air:sdxl:checkpoint:civitai:133005@1759168", url="https://civitai.com/models/133005?modelVersionId=1759168",
        trained_words=["masterpiece_best_quality_ultra_detailed_8k_wallpaper_photorealistic_raw_photo_dslr",
                       "cinematic film still of a lone astronaut, shallow depth of field, vignette, highly detailed",
                       "juggernaut"])
    source_file = SourceFile.objects.create(
        version=version, external_id="1661863", name=LONG_NAME, size=big.size, file_type="Model",
        format="SafeTensor", fp="fp16", size_kind="pruned", primary=True, sha256=sha, autov1="0f1e2d3c",
        autov2=sha[:10], autov3=autov3_full[:12], crc32="9a8b7c6d", blake3=blake3, source_scan="Success",
        source_scan_message="No Pickle imports",
        download_url="https://civitai.com/api/download/models/1759168?type=Model&format=SafeTensor&size=pruned&fp=fp16")
    Match.objects.create(local_file=big, source_file=source_file, kind="exact", evidence=f"SHA256 equal to {LONG_NAME}")
    Match.objects.create(local_file=copy, source_file=source_file, kind="renamed", via=big,
                         evidence=f"SHA256 equal to {LONG_NAME} (here named {copy.name})")

    repo = "stabilityai/stable-diffusion-xl-base-1.0-with-a-very-long-organisation-repo-name_v2"
    commit = hex64("commit")[:40]
    hub = SourceModel.objects.create(source="huggingface", external_id=f"model:{repo}", name=repo,
                                     url=f"https://huggingface.co/{repo}")
    hub_version = SourceVersion.objects.create(model=hub, external_id=commit, name=commit,
                                               url=f"https://huggingface.co/{repo}/tree/{commit}")
    hub_file = SourceFile.objects.create(version=hub_version, external_id="text_encoder_2/model.fp16.safetensors",
                                         name="text_encoder_2/model.fp16.safetensors", size=1_389_319_682,
                                         sha256=hex64("text_encoder_2/model.fp16.safetensors"))
    SourceFile.objects.create(version=hub_version, external_id="model_index.json", name="model_index.json",
                              size=609, git_sha1=hashlib.sha1(b"model_index").hexdigest())
    Match.objects.create(local_file=folder, source_file=hub_file, kind="partial", share=0.1,
                         evidence="shares text_encoder_2 with this repo")

    Job.objects.create(owner=user, kind="hf_index", status="done", message="indexed 23 files",
                       params={"repo_id": repo, "revision": commit, "repo_type": "model"},
                       result={"model_id": hub.pk, "source_version_id": hub_version.pk, "files": 23})
    local_dir = "/srv/models/huggingface/stabilityai/stable-diffusion-xl-base-1.0-with-a-very-long-folder-name"
    verify = Job.objects.create(
        owner=user, kind="hf_verify", status="done", progress_done=13_875_000_000, progress_total=13_875_000_000,
        message="1 matched, 1 mismatched, 1 missing, 1 extra",
        params={"repo_id": repo, "local_dir": local_dir, "revision": commit, "repo_type": "model"},
        result={"revision": commit, "exit_status": 1, "matched": ["text_encoder_2/model.fp16.safetensors"],
                "mismatched": [{"path": "unet/diffusion_pytorch_model.fp16.safetensors", "reason": "hash",
                                "expected": hex64("unet-expected"), "actual": hex64("unet-actual"),
                                "expected_size": 5_135_149_760, "actual_size": 5_135_149_760}],
                "missing": ["vae_1_0/diffusion_pytorch_model.fp16.safetensors"],
                "extra": ["unet/diffusion_pytorch_model.fp16.safetensors.incomplete_download_part_0001"],
                "refused": [], "skipped_rehash": 0, "hashed_bytes": 13_875_000_000})
    from models_catalog.services.tokens import api_token_create

    _token, key = api_token_create(user=user, name="push from the GPU box in the basement, the one with the loud fan")
    return {"big": big.pk, "folder": folder.pk, "civitai": civitai.pk, "hub": hub.pk, "verify": verify.pk,
            "sha": sha, "blake3": blake3, "token": key}


def test_every_page_fits_a_phone(new_page, live_server, shot):
    user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
    ids = _hostile_library(user)
    admin = get_user_model().objects.create_superuser("site-admin.on-call@example-studio.com",
                                                      password=PASSWORD)
    signed_in = {
        "my-files": "/",
        "file": f"/files/{ids['big']}/",
        "folder": f"/files/{ids['folder']}/",
        "catalog-mine": "/catalog/",
        "catalog-all": "/catalog/?scope=all",
        "catalog-hash-search": f"/catalog/?scope=all&q={ids['sha']}",
        "model-civitai": f"/models/{ids['civitai']}/",
        "model-hub": f"/models/{ids['hub']}/",
        "lookup-empty": "/lookup/",
        "lookup-result": f"/lookup/?q=sha256:{ids['sha']}%0Ablake3:{ids['blake3']}",
        "lookup-error": "/lookup/?q=" + "f" * 63,
        "duplicates": "/duplicates/",
        "hf": "/hf/",
        "job-verify": f"/jobs/{ids['verify']}/",
        "tokens": "/tokens/",
        "upload": "/upload/",
        # django.contrib.auth's own pages (they render with the admin's templates).
        "password-change": "/accounts/password_change/",
        "password-change-done": "/accounts/password_change/done/",
    }
    signed_out = {
        "login": "/accounts/login/",
        "password-reset": "/accounts/password_reset/",
        "password-reset-done": "/accounts/password_reset/done/",
        "password-reset-bad-link": "/accounts/reset/MQ/set-password/",
        "password-reset-complete": "/accounts/reset/done/",
    }
    staff = {
        "admin": "/admin/",
        "admin-files": "/admin/models_catalog/localfile/",
        "admin-file": f"/admin/models_catalog/localfile/{ids['big']}/change/",
    }
    # Not visited: /api/docs/ is Swagger UI (a vendored JS app with its own layout, not our templates), and
    # /api/schema/ is YAML. Every /api/v1/ route answers JSON to scripts, but a browser gets DRF's browsable
    # API page: one of them (same template for all) is checked. Exports (/duplicates/export.*) are downloads;
    # /files/<id>/forget/, /hf/index/ and /hf/verify/ take POST only and redirect; /accounts/logout/ is POST.
    signed_in["api-browsable"] = "/api/v1/files/"

    too_wide = {}

    def visit(page, pages):
        for slug, url in pages.items():
            response = page.goto(url)
            assert response.status < 500, (slug, url, response.status)
            page.wait_for_load_state("load")
            problem = _overflow(page)
            shot(page, slug)
            if problem:
                too_wide[slug] = f"{url}: {problem}"

    page = new_page(**PHONE)
    sign_in(page, USERNAME)
    visit(page, signed_in)
    visit(new_page(**PHONE), signed_out)
    page = new_page(**PHONE)
    page.goto("/admin/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    visit(page, staff)

    assert not too_wide, "pages wider than a 390 px phone:\n" + "\n".join(f"- {k}: {v}" for k, v in too_wide.items())


def test_a_hash_cut_short_on_a_phone_copies_whole(new_page):
    user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
    ids = _hostile_library(user)
    page = new_page(**PHONE)
    sign_in(page, USERNAME)
    page.goto(f"/lookup/?q={ids['sha']}")
    value = page.locator("section.lookup-result h2 code.hash")
    copy = page.locator("section.lookup-result h2").get_by_role("button", name="Copy the hash")
    # Cut on screen (an ellipsis), whole in the text and the title.
    assert value.evaluate("el => el.scrollWidth > el.clientWidth && getComputedStyle(el).textOverflow") == "ellipsis"
    assert value.text_content() == ids["sha"]
    assert value.get_attribute("title") == ids["sha"]
    assert copy.bounding_box()["x"] + copy.bounding_box()["width"] <= PHONE_WIDTH

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == ids["sha"]

    # Where the clipboard is refused, the whole value is selected for the user to copy.
    copy.click()  # while it still says "Copied": the label comes back all the same
    expect(copy).to_have_text("Copy", timeout=3_000)
    page.evaluate("() => { navigator.clipboard.writeText = () => Promise.reject(new Error('denied')); }")
    copy.click()
    expect(copy).to_have_text("Select and copy")
    assert page.evaluate("String(window.getSelection())") == ids["sha"]

    # Without scripts there is no Copy button that does nothing; the value is still there to select.
    page = new_page(**PHONE, java_script_enabled=False)
    sign_in(page, USERNAME)
    page.goto(f"/lookup/?q={ids['sha']}")
    expect(page.locator("section.lookup-result h2 code.hash")).to_have_text(ids["sha"])
    expect(page.locator("button.copy")).to_have_count(1)
    expect(page.locator("button.copy")).to_be_hidden()
