"""Headless Chromium (Debian's package) driven by Playwright's sync API against pytest-django's live_server.

The live server runs in a thread of this process, so `settings` overrides and
monkeypatches reach it; the browser runs in its own process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model

from tests.model_builders import write_tensors

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
PASSWORD = "pw-browser-flow-123"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so the page fixture knows whether to dump what it saw.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium package"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # While Playwright's sync API is alive it keeps an asyncio loop registered as running in
    # this thread, and Django's async_unsafe guard then refuses every ORM call the test thread
    # makes (creating users, running a task, flushing the DB). No coroutine ever touches the ORM
    # here, so the guard is switched off for exactly as long as the browser lives.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def browser_data(tmp_path, settings) -> Path:
    """A data dir of this test's own: uploads and the hash cache never leak between tests."""
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    settings.DATA_DIR = data
    settings.UPLOAD_DIR = data / "uploads"
    settings.HASH_CACHE_PATH = data / "hash-cache.sqlite3"
    return data


@pytest.fixture
def web_user(live_server):
    # live_server first: it makes the DB transactional, so the server thread sees this row.
    return get_user_model().objects.create_user("carol", password=PASSWORD)


class PageLog:
    """What the page said while the test ran: printed when the test fails."""

    def __init__(self):
        self.console: list[str] = []
        self.errors: list[str] = []
        self.bad_responses: list[str] = []

    def watch(self, page) -> None:
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", lambda r: r.status >= 500
                and self.bad_responses.append(f"{r.status} {r.request.method} {r.url}"))


@pytest.fixture
def shot(request):
    """shot(page, "step") saves test-output/screenshots/<test>-<step>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = request.node.name.removeprefix("test_")

    def save(page, step: str, *, full_page: bool = True) -> Path:
        path = SCREENSHOTS / f"{test}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save


@pytest.fixture
def page_log():
    return PageLog()


@pytest.fixture
def new_page(request, browser, live_server, page_log, shot):
    """new_page(**context_options) opens a page in a fresh context; on failure its state is dumped."""
    contexts, pages = [], []

    def make(**options):
        context = browser.new_context(base_url=live_server.url, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page_log.watch(page)
        pages.append(page)
        return page

    yield make
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        for n, page in enumerate(pages):
            try:
                path = shot(page, f"FAILED-{n}")
                body = page.inner_text("body")[:3000]
                print(f"\n--- page {n}: {page.url} (screenshot {path})\n{body}")
            except Exception as exc:  # the page may be gone; the rest of the dump still helps
                print(f"\n--- page {n}: could not capture ({exc})")
        print("--- console:\n" + "\n".join(page_log.console[-50:]))
        print("--- page errors:\n" + "\n".join(page_log.errors))
        print("--- 5xx responses:\n" + "\n".join(page_log.bad_responses))
    for context in contexts:
        context.close()


@pytest.fixture
def signed_in_page(new_page, web_user):
    """signed_in_page(**context_options): a page signed in through the real login form."""

    def make(**options):
        page = new_page(**options)
        sign_in(page, web_user.username)
        return page

    return make


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name=f"Sign out ({username})").wait_for()


def write_model(path: Path, *, seed: int, rank: int = 16) -> Path:
    """A small LoRA-shaped safetensors file (F16/F32 tensors, metadata), about 1 MB at rank 16."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for block in range(4):
        base = f"lora_unet_down_blocks_{block}_attentions_0_proj_in"
        tensors[f"{base}.lora_down.weight"] = rng.standard_normal((rank, 1280), dtype=np.float32)
        tensors[f"{base}.lora_up.weight"] = rng.standard_normal((1280, rank), dtype=np.float32).astype(np.float16)
        tensors[f"{base}.alpha"] = np.array(rank, dtype=np.float16)
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
    return write_tensors(path, {name: (names[array.dtype], array) for name, array in tensors.items()},
                         metadata={"ss_network_dim": str(rank), "ss_network_module": "networks.lora"})
