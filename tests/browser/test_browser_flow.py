"""The web app in headless Chromium: sign in, upload, watch hashing finish, look the hash up, upload it again
(recognised), find duplicates.

Expected hashes are computed here with hashlib from the bytes the test wrote,
never read back from the app.
"""
from __future__ import annotations

import csv
import hashlib
import re

import pytest
from playwright.sync_api import expect

from models_catalog.models import FileHashes, LocalFile
from tests.browser.conftest import write_model

pytestmark = pytest.mark.browser

# Records what the upload form's status line and progress bar show, so the test can
# check the XHR progress UI even though the page navigates away as soon as it is done.
WATCH_UPLOAD = """
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("upload-status");
  const bar = document.getElementById("upload-progress");
  if (!status) return;
  new MutationObserver(() => {
    console.log(`upload-ui: ${status.textContent} | bar=${bar.hidden ? "hidden" : bar.value}`);
  }).observe(status, {childList: true, characterData: true, subtree: true});
});
"""


def _hash_cell(page, kind: str):
    row = page.locator("table.hashes tbody tr").filter(has=page.locator("th", has_text=re.compile(f"^{kind}$")))
    return row.locator("td code"), row.get_by_role("button", name=f"Copy {kind}")


def _upload(page, path, shot, step: str) -> int:
    """Upload through the form (the XHR path of app.js) and return the new file's id from the redirect."""
    page.goto("/upload/")
    page.locator("#file-input").set_input_files(str(path))
    shot(page, f"{step}-chosen")
    with page.expect_navigation(url=re.compile(r"/files/\d+/$"), timeout=30_000):
        page.get_by_role("button", name="Upload").click()
    return int(re.search(r"/files/(\d+)/$", page.url).group(1))


def test_upload_hash_lookup_and_duplicates(signed_in_page, browser_data, eager_celery, monkeypatch, page_log, shot,
                                           settings, tmp_path):
    model = write_model(tmp_path / "tiny-lora-v1.safetensors", seed=1)
    data = model.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest().upper()
    autov2 = sha256[:10]

    # Hold the first upload's hashing back, so the page is seen queued and polling before
    # the test lets the work run; everything downstream of hashing stays eager.
    held: list[int] = []
    monkeypatch.setattr("models_catalog.services.upload.enqueue_hashing", held.append)

    page = signed_in_page()
    page.add_init_script(WATCH_UPLOAD)
    shot(page, "01-signed-in")
    pk = _upload(page, model, shot, "02-upload")
    ui = [line for line in page_log.console if "upload-ui:" in line]
    assert any(re.search(r"Uploading: \d+% .* \| bar=\d+", line) for line in ui), ui
    assert any("Uploading: 100%" in line for line in ui), ui
    assert any("Uploaded. Hashing" in line for line in ui), ui
    assert held == [pk]

    status = page.locator("#file-status")
    badge = status.locator(".badge").first
    expect(badge).to_have_text("queued")
    expect(status).to_have_attribute("hx-trigger", "every 2s")
    shot(page, "03-queued")

    # Run the hashing right after a poll answered, so the page finds it finished on its next poll
    # (and the test thread never shares the in-memory DB connection with a request in flight).
    is_poll = lambda r: r.url.endswith(f"/files/{pk}/") and r.request.headers.get("hx-request") == "true"  # noqa: E731
    with page.expect_response(is_poll, timeout=10_000):
        pass
    from workers.tasks import hash_local_file

    hash_local_file.delay(pk)
    expect(badge).to_have_text("done", timeout=10_000)
    status = page.locator("#file-status")
    expect(status).not_to_have_attribute("hx-trigger", re.compile(".*"))
    polls_after_done: list[str] = []

    def count_poll(request):
        if request.url.endswith(f"/files/{pk}/") and request.headers.get("hx-request") == "true":
            polls_after_done.append(request.url)

    page.on("request", count_poll)
    page.wait_for_timeout(2_500)
    page.remove_listener("request", count_poll)
    assert polls_after_done == [], "the file page kept polling after the file was done"
    expect(status.locator(".verdict-safe")).to_have_text("safe")
    shot(page, "04-done")

    sha_code, _ = _hash_cell(page, "SHA256")
    autov2_code, copy_autov2 = _hash_cell(page, "AutoV2")
    expect(sha_code).to_have_text(sha256)
    expect(autov2_code).to_have_text(autov2)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy_autov2.click()
    expect(copy_autov2).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == autov2
    expect(copy_autov2).to_have_text("Copy", timeout=3_000)

    page.get_by_role("link", name="Hash lookup").click()
    page.locator("#id_q").fill(autov2)
    page.get_by_role("button", name="Look up").click()
    expect(page).to_have_url(re.compile(rf"/lookup/\?q={autov2}$"))
    result = page.locator("section.lookup-result")
    expect(result).to_have_count(1)
    mine = result.locator("ul.matches li").filter(has_text="my file")
    expect(mine).to_have_count(1)
    expect(mine.get_by_role("link", name=model.name)).to_have_attribute("href", f"/files/{pk}/")
    expect(mine.locator(".evidence .badge.kind")).to_have_text("AutoV2")
    shot(page, "05-lookup")

    copy = tmp_path / "renamed" / "my-favourite-style.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(data)
    monkeypatch.undo()  # from here on, files are hashed eagerly inside the request that adds them
    # Uploading the same bytes again stores nothing and lands on the file I already have.
    stored = sorted(browser_data.joinpath("uploads").rglob("*"))
    assert _upload(page, copy, shot, "06-upload-again") == pk
    expect(page.locator("p.flash")).to_have_text(f"You already have this file ({model.name}): nothing new was stored.")
    assert sorted(browser_data.joinpath("uploads").rglob("*")) == stored and LocalFile.objects.count() == 1

    # The renamed copy registered where it is: a duplicate of the upload.
    settings.MODEL_ROOTS = [copy.parent]
    page.goto("/register/")
    page.locator("#id_path").fill(str(copy))
    page.get_by_role("button", name="Register").click()
    expect(page.locator("main")).to_contain_text("Queued for hashing")
    pk2 = LocalFile.objects.get(path=str(copy.resolve())).pk
    page.goto(f"/files/{pk2}/")
    expect(page.locator("#file-status .badge").first).to_have_text("done")
    expect(_hash_cell(page, "SHA256")[0]).to_have_text(sha256)

    page.get_by_role("link", name="Duplicates").click()
    summary = page.locator("p.summary")
    expect(summary).to_contain_text("1 group")
    expect(summary).to_contain_text(f"({len(data)} bytes)")
    group = page.locator("section.dup-group")
    expect(group).to_have_count(1)
    expect(group.locator("tbody tr")).to_have_count(2)
    expect(group.get_by_role("link", name=model.name)).to_have_attribute("href", f"/files/{pk}/")
    expect(group.get_by_role("link", name=copy.name)).to_have_attribute("href", f"/files/{pk2}/")
    expect(group.locator("tr.keep")).to_have_count(1)
    shot(page, "07-duplicates")

    with page.expect_download() as info:
        summary.get_by_role("link", name="CSV").click()
    download = info.value
    assert download.suggested_filename == "modelxref-duplicates.csv"
    rows = list(csv.DictReader(open(download.path(), newline="", encoding="utf-8")))
    assert sorted(r["name"] for r in rows) == sorted([model.name, copy.name])
    assert {r["group"] for r in rows} == {"1"}
    assert sorted(r["keep"] for r in rows) == ["no", "yes"]
    assert {int(r["size_bytes"]) for r in rows} == {len(data)}
    assert {int(r["group_reclaimable_bytes"]) for r in rows} == {len(data)}
    assert page_log.errors == []


def test_upload_over_limit_is_refused_in_the_browser(signed_in_page, browser_data, settings, shot, tmp_path,
                                                       page_log):
    settings.MAX_UPLOAD_BYTES = 4096
    big = write_model(tmp_path / "too-big.safetensors", seed=2, rank=4)
    size = big.stat().st_size
    assert size > settings.MAX_UPLOAD_BYTES

    page = signed_in_page()
    page.goto("/upload/")
    expect(page.locator("main")).to_contain_text("Files up to 4.0")
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.locator("#file-input").set_input_files(str(big))
    page.get_by_role("button", name="Upload").click()
    message = page.locator("#upload-status")
    expect(message).to_have_text(f"This file is {size:,} bytes; the limit is 4,096 bytes.")
    expect(page).to_have_url(re.compile(r"/upload/$"))
    expect(page.locator("#upload-progress")).to_be_hidden()
    shot(page, "refused")
    assert posts == [], "the browser sent an over-limit file"

    # The limit went down after the page was loaded: the browser's check passes, the server
    # refuses, and the page says why.
    settings.MAX_UPLOAD_BYTES = 64 * 1024**3
    page.reload()
    settings.MAX_UPLOAD_BYTES = 4096
    page.locator("#file-input").set_input_files(str(big))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Upload").click()
    assert answer.value.status == 413
    expect(message).to_have_text("the upload is larger than the limit of 4,096 bytes")
    shot(page, "refused-by-server")
    assert not LocalFile.objects.exists()
    assert not any(browser_data.joinpath("uploads").iterdir())
    assert page_log.errors == []


def _focused(page) -> str:
    return page.evaluate("""() => {
      const el = document.activeElement;
      return `${el.tagName.toLowerCase()}#${el.id}:${(el.textContent || "").trim().slice(0, 40)}`;
    }""")


def test_keyboard_reaches_nav_links_and_lookup_box(signed_in_page, shot):
    page = signed_in_page()
    page.goto("/lookup/")
    page.locator("body").focus()
    seen = []
    for _ in range(15):
        page.keyboard.press("Tab")
        seen.append(_focused(page))
        if seen[-1].startswith("textarea#id_q"):
            break
    assert seen[0] == "a#:Skip to content", seen
    nav = ["Catalog", "Hash lookup", "My files", "Register", "Upload", "Duplicates", "Hugging Face", "API"]
    for name in nav:
        assert f"a#:{name}" in seen, (name, seen)
    assert [s.split(":", 1)[1] for s in seen if s.split(":", 1)[1] in nav] == nav, seen
    assert seen[-1].startswith("textarea#id_q"), seen
    # The focus ring is visible, not suppressed.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    shot(page, "lookup-box-focused")

    page.keyboard.type("B94D27B993")
    page.keyboard.press("Tab")
    assert _focused(page) == "button#:Look up"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/lookup/\?q=B94D27B993$"))
    expect(page.locator("section.lookup-result")).to_contain_text("Nothing known has this hash")
    shot(page, "submitted-by-keyboard")


def test_file_list_fits_a_phone_screen(signed_in_page, web_user, shot):
    names = [
        "juggernautXL_juggXIByRundiffusion_v11_fp16_pruned-emaonly-with-baked-vae.safetensors",
        "realisticVisionV60B1_v51HyperVAE.safetensors",
        "a folder/with spaces and a rather long descriptive name for a LoRA.safetensors",
    ]
    for n, name in enumerate(names):
        digest = hashlib.sha256(name.encode()).hexdigest()
        lf = LocalFile.objects.create(owner=web_user, origin="uploaded", path=f"/data/uploads/{n}/{name}", name=name,
                                      size=6_938_040_682, status="done", safety_verdict="safe", format="safetensors")
        FileHashes.objects.create(local_file=lf, size=lf.size, sha256=digest, autov2=digest[:10])
    LocalFile.objects.create(owner=web_user, origin="registered", path="/m/hashing.safetensors",
                             name="sd_xl_refiner_1.0_0.9vae.safetensors", size=6_000_000_000, status="hashing",
                             bytes_total=6_000_000_000, bytes_done=2_400_000_000)

    page = signed_in_page(viewport={"width": PHONE_WIDTH, "height": 844}, device_scale_factor=2, is_mobile=True,
                          has_touch=True)
    page.goto("/")
    expect(page.locator("table.myfiles tbody tr")).to_have_count(4)
    expect(page.locator("table.myfiles progress")).to_have_count(1)
    for name in names:
        expect(page.get_by_role("link", name=name)).to_be_visible()
    width = _scroll_width(page)
    shot(page, "phone-file-list")
    assert width <= PHONE_WIDTH + 2, f"{width} px wide on a {PHONE_WIDTH} px phone; too wide: {_too_wide(page)}"


PHONE_WIDTH = 390


def _scroll_width(page) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth")


def _too_wide(page) -> list[str]:
    return page.evaluate("""(limit) => [...document.querySelectorAll('body *')]
        .filter(el => el.getBoundingClientRect().right > limit)
        .map(el => `${el.tagName}.${el.className}: right=${Math.round(el.getBoundingClientRect().right)}`)
        .slice(0, 10)""", PHONE_WIDTH + 2)


def test_register_a_folder_from_the_page_and_watch_it_hash(signed_in_page, browser_data, eager_celery, monkeypatch,
                                                           settings, shot, tmp_path, page_log):
    root = tmp_path / "models"
    (root / "loras").mkdir(parents=True)
    first = write_model(root / "loras" / "style-a.safetensors", seed=5, rank=4)
    second = write_model(root / "loras" / "style-b.safetensors", seed=6, rank=4)
    outside = write_model(tmp_path / "private.safetensors", seed=7, rank=4)
    (root / "loras" / "sneaky.safetensors").symlink_to(outside)
    settings.MODEL_ROOTS = [root]
    held: list[int] = []  # hashing waits until the test lets it run, so My files is seen in progress
    monkeypatch.setattr("models_catalog.services.register.enqueue_hashing_many",
                        lambda *, local_files: held.extend(lf.pk for lf in local_files))

    page = signed_in_page()
    page.goto("/")
    page.get_by_role("link", name="Register a folder on this server").click()
    expect(page).to_have_url(re.compile(r"/register/$"))
    expect(page.get_by_role("link", name="Register", exact=True)).to_have_attribute("aria-current", "page")
    page.get_by_role("link", name=str(root)).click()
    box = page.get_by_label("File or folder on this server (under a model root)")
    expect(box).to_have_value(str(root))
    shot(page, "01-root-chosen")
    box.fill(str(root / "loras"))
    page.get_by_role("button", name="Register").click()

    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("status")).to_contain_text("2 queued")
    expect(outcome.get_by_role("status")).to_contain_text("1 refused")
    expect(outcome.locator("#refused")).to_contain_text("sneaky.safetensors")
    expect(outcome.locator("#refused")).to_contain_text("outside the model roots")
    expect(outcome.locator("#queued li")).to_have_count(2)
    shot(page, "02-outcome")
    assert len(held) == 2

    page.get_by_role("link", name="Follow the progress on My files").click()
    expect(page).to_have_url(re.compile(r"/$"))
    rows = {path.name: page.locator("tr", has=page.get_by_role("link", name=path.name)) for path in (first, second)}
    for row in rows.values():
        expect(row).to_contain_text("queued")
    shot(page, "03-my-files-queued")

    # Hash right after a poll answered, so the next poll finds the work finished.
    is_poll = lambda r: r.request.headers.get("hx-request") == "true"  # noqa: E731
    with page.expect_response(is_poll, timeout=10_000):
        pass
    from workers.tasks import hash_local_file

    for pk in held:
        hash_local_file.delay(pk)
    for row in rows.values():  # hashed, read and matched: nothing knows these toy files
        expect(row).to_contain_text("unknown", timeout=10_000)
    shot(page, "04-my-files-done")
    assert sorted(LocalFile.objects.values_list("path", flat=True)) == [str(first), str(second)]
    assert page_log.errors == []
