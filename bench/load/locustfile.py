"""What 50 (or 10) people do at once: API lookups by each hash kind, My files, catalog search, duplicates,
file detail, through the API (token) and the pages (a session made by generate.py).

Run by bench/load/run.py (headless, bounded in time and requests); the credentials file comes from
generate.py (LOAD_CREDENTIALS). Requests are named by what they do, so the stats group them.
"""
from __future__ import annotations

import json
import os
import random

import gevent

from locust import HttpUser, between, events, task

CREDENTIALS = json.loads(open(os.environ["LOAD_CREDENTIALS"]).read())["users"]
MAX_REQUESTS = int(os.environ.get("LOAD_MAX_REQUESTS", "0"))
_sent = 0


_env = None


@events.init.add_listener
def _keep_environment(environment, **kwargs):
    global _env
    _env = environment


@events.request.add_listener
def _stop_after_max_requests(**kwargs):
    """Bound the run in requests as well as in time (--run-time)."""
    global _sent
    _sent += 1
    if MAX_REQUESTS and _sent == MAX_REQUESTS and _env is not None and _env.runner is not None:
        gevent.spawn(_env.runner.quit)  # not from this user's greenlet, which quit() kills


class LibraryUser(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self):
        self.me = random.choice(CREDENTIALS)
        # The production settings redirect plain HTTP and mark cookies Secure: speak as the TLS proxy does.
        self.api = {"Authorization": f"Token {self.me['token']}", "X-Forwarded-Proto": "https"}
        self.page = {"X-Forwarded-Proto": "https", "Cookie": f"sessionid={self.me['session']}"}
        self.sample = self.me["sample"]

    def _get(self, url, name, headers):
        with self.client.get(url, name=name, headers=headers, allow_redirects=False, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.error!r}" if r.status_code == 0 else f"{r.status_code}: {r.text[:200]}")

    def _hashes(self):
        return random.choice(self.sample["hashes"])

    @task(3)
    def lookup_sha256(self):
        self._get(f"/api/v1/lookup/?q={self._hashes()['sha256']}", "lookup sha256", self.api)

    @task(2)
    def lookup_autov2(self):
        self._get(f"/api/v1/lookup/?q={self._hashes()['autov2']}", "lookup autov2", self.api)

    @task(1)
    def lookup_autov3(self):
        self._get(f"/api/v1/lookup/?q={self._hashes()['autov3']}", "lookup autov3", self.api)

    @task(1)
    def lookup_autov1_crc32(self):
        self._get(f"/api/v1/lookup/?q={self._hashes()['crc32']}", "lookup autov1/crc32", self.api)

    @task(1)
    def lookup_blake3(self):
        self._get(f"/api/v1/lookup/?q=blake3:{self._hashes()['blake3']}", "lookup blake3", self.api)

    @task(3)
    def my_files_api(self):
        self._get("/api/v1/files/", "api files list", self.api)

    @task(1)
    def my_files_api_filter(self):
        self._get("/api/v1/files/?safety=dangerous", "api files filter", self.api)

    @task(1)
    def my_files_api_search(self):
        self._get(f"/api/v1/files/?search={random.choice(self.sample['words'])}", "api files search", self.api)

    @task(2)
    def my_files_page(self):
        self._get("/", "page my files", self.page)

    @task(1)
    def my_files_page_filter(self):
        self._get("/?type=LORA", "page my files filter", self.page)

    @task(1)
    def my_files_page_search(self):
        self._get(f"/?search={random.choice(self.sample['words'])}", "page my files search", self.page)

    @task(1)
    def catalog_api_search(self):
        self._get(f"/api/v1/models/?search={random.choice(self.sample['words'])}", "api catalog search", self.api)

    @task(1)
    def catalog_page_search(self):
        self._get(f"/catalog/?q={random.choice(self.sample['words'])}", "page catalog search", self.page)

    @task(1)
    def duplicates_api(self):
        self._get("/api/v1/duplicates/", "api duplicates", self.api)

    @task(1)
    def duplicates_page(self):
        self._get("/duplicates/", "page duplicates", self.page)

    @task(2)
    def file_detail_api(self):
        self._get(f"/api/v1/files/{random.choice(self.sample['file_ids'])}/", "api file detail", self.api)

    @task(1)
    def file_detail_page(self):
        self._get(f"/files/{random.choice(self.sample['file_ids'])}/", "page file detail", self.page)
