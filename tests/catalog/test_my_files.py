"""My files, on the page and through GET /api/v1/files/: what each file is, search, filters, sorts,
keyset pages and a query count that does not grow with the page."""
from __future__ import annotations

import hashlib
import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from models_catalog.identity import best_model_names_sync
from models_catalog.models import FolderMember, LocalFile, Match, SourceFile
from tests.factories import catalog_model_file as _model, hashes_of as _hashes, library_file as _file, token_client  # noqa: F401

pytestmark = pytest.mark.django_db

ROW_NAME = re.compile(r'<td class="name"><a href="/files/\d+/">([^<]*)</a>')


@pytest.fixture
def library(user, other_user):
    """A small library: identified, related, unknown, broken and working files in two folders."""
    base = _model("Hidden Base Model", type_="Checkpoint", base="SD 1.5")
    lora = _model("Ink Style", type_="LORA", base="SDXL 1.0", version="v2", words=("inkstyle", "lineart"))
    files = {
        "renamed": _file(user, "my_favourite_RENAMED.safetensors", data=b"renamed", size=700, matches=[(base, "renamed")]),
        "lora": _file(user, "ink.safetensors", folder="/models/lora", data=b"ink", size=300, matches=[(lora, "exact")]),
        "partial": _file(user, "finetune.safetensors", data=b"finetune", size=900, matches=[(base, "partial")]),
        "unknown": _file(user, "mystery.ckpt", data=b"mystery", size=100, format="torch-zip", safety_verdict="dangerous"),
        "broken": _file(user, "cut.safetensors", folder="/models/lora", data=b"cut", size=50, safety_verdict="unreadable",
                        analysis_error="truncated: 16 of 64 data bytes present — an incomplete download?"),
        "working": _file(user, "big.safetensors", status="hashing", safety_verdict="", bytes_total=100, bytes_done=40),
    }
    _file(other_user, "bobs-private.safetensors", data=b"renamed", size=700, matches=[(base, "exact")])
    return files


@pytest.fixture
def client_alice(user):
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def api(user):
    return token_client(user)


def page_names(client, **params) -> list[str]:
    resp = client.get("/", params)
    assert resp.status_code == 200
    return [html.unescape(n) for n in ROW_NAME.findall(resp.content.decode())]


def api_names(api, **params) -> list[str]:
    resp = api.get("/api/v1/files/", params)
    assert resp.status_code == 200, resp.content
    return [r["name"] for r in resp.json()["results"]]


# --- what each row says -------------------------------------------------------------------


def test_each_row_shows_model_version_type_base_model_match_badge_and_safety(client_alice, library):
    text = client_alice.get("/").content.decode()
    row = text[text.index("my_favourite_RENAMED.safetensors"):]
    row = row[:row.index("</tr>")]
    assert "Hidden Base Model" in row and "v1.0" in row and "Checkpoint" in row and "SD 1.5" in row
    assert '<span class="badge kind-renamed"' in row and "renamed copy" in row and "verdict-safe" in row
    lora = text[text.index(">ink.safetensors<"):]
    lora = lora[:lora.index("</tr>")]
    assert "Ink Style" in lora and "LORA" in lora and "SDXL 1.0" in lora and "exact copy" in lora


def test_rows_say_why_a_file_is_not_identified(client_alice, library):
    text = client_alice.get("/").content.decode()
    broken = text[text.index(">cut.safetensors<"):]
    broken = broken[:broken.index("</tr>")]
    assert "st-broken" in broken and "truncated: 16 of 64 data bytes present" in broken and "st-done" not in broken
    working = text[text.index(">big.safetensors<"):]
    assert "40%" in working[:working.index("</tr>")]


def test_hostile_names_folders_hosts_and_model_names_are_escaped_in_the_rows(client_alice, user):
    """The rows are a Jinja2 template: what a file or Civitai calls itself is text, never markup."""
    evil = "<b onmouseover=\"alert('x')\">x"
    model = _model(f"model {evil}", type_="LORA", base="SD 1.5")
    _file(user, f"{evil}.safetensors", folder=f"/models/{evil}", host=f"pc{evil}", data=b"evil", matches=[(model, "exact")])
    text = client_alice.get("/").content.decode()
    assert evil not in text
    escaped = html.escape(evil)
    assert f">{escaped}.safetensors</a>" in text  # the name
    assert f"model {escaped}</a>" in text  # what Civitai calls it
    assert f"pc{escaped}:" in text and f">/models/{escaped}</a>" in text  # host and folder
    assert f"&lt;lora:{escaped}:1&gt;" in text  # the A1111 copy button of the row


def test_the_folder_of_a_row_links_to_the_folder_filter(client_alice, library):
    assert 'href="?folder=/models/lora"' in client_alice.get("/").content.decode()


def test_the_analysing_stage_shows_progress_like_hashing(client_alice, user):
    _file(user, "reading.safetensors", status="analysing", safety_verdict="", bytes_total=1000, bytes_done=1000,
          analysed_bytes=250, stage_started_at=timezone.now() - timezone.timedelta(seconds=10))
    text = client_alice.get("/").content.decode()
    assert "reading tensors" in text and 'value="25"' in text and "25%" in text and "/s</span>" in text


def test_staff_see_their_own_files_by_default_and_everyones_when_they_ask(library, other_user):
    staff = get_user_model().objects.create_user("root", password="x", is_staff=True)
    _file(staff, "staff-own.safetensors")
    c = Client()
    c.force_login(staff)
    assert page_names(c) == ["staff-own.safetensors"]
    assert "bobs-private.safetensors" in page_names(c, scope="all")
    assert api_names(token_client(staff)) == ["staff-own.safetensors"]
    assert "bobs-private.safetensors" in api_names(token_client(staff), scope="all")


def test_scope_all_shows_nothing_more_to_someone_who_is_not_staff(client_alice, library):
    assert "bobs-private.safetensors" not in page_names(client_alice, scope="all")


# --- filters -------------------------------------------------------------------------------

FILTERS = [
    ({"type": "lora"}, ["ink.safetensors"]),
    ({"base_model": "SD 1.5"}, ["finetune.safetensors", "my_favourite_RENAMED.safetensors"]),
    ({"safety": "dangerous"}, ["mystery.ckpt"]),
    ({"match": "renamed"}, ["my_favourite_RENAMED.safetensors"]),
    ({"match": "partial"}, ["finetune.safetensors"]),
    ({"match": "none"}, ["big.safetensors", "cut.safetensors", "mystery.ckpt"]),
    ({"state": "identified"}, ["ink.safetensors", "my_favourite_RENAMED.safetensors"]),
    ({"state": "related"}, ["finetune.safetensors"]),
    ({"state": "unknown"}, ["mystery.ckpt"]),
    ({"state": "broken"}, ["cut.safetensors"]),
    ({"state": "working"}, ["big.safetensors"]),
    ({"folder": "/models/lora"}, ["cut.safetensors", "ink.safetensors"]),
    ({"folder": "/models/lora/"}, ["cut.safetensors", "ink.safetensors"]),
    ({"folder": "/models/lo"}, []),  # a prefix of a folder name is not that folder
    ({"format": "torch-zip"}, ["mystery.ckpt"]),
    ({"status": "hashing"}, ["big.safetensors"]),
    ({"type": "lora", "base_model": "SD 1.5"}, []),
]


@pytest.mark.parametrize("params,expected", FILTERS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items())
                         if isinstance(v, dict) else None)
def test_each_filter_on_the_page_and_in_the_api(client_alice, api, library, params, expected):
    assert sorted(page_names(client_alice, **params)) == expected
    assert sorted(api_names(api, **params)) == expected


def test_a_filter_that_finds_nothing_says_so_and_offers_to_clear(client_alice, library):
    text = client_alice.get("/", {"type": "Upscaler"}).content.decode()
    assert "None of your files matches these filters" in text and "Show all my files" in text


def test_a_bad_filter_value_is_dropped_on_the_page_and_refused_by_the_api(client_alice, api, library):
    assert len(page_names(client_alice, state="bogus")) == 6
    resp = api.get("/api/v1/files/", {"state": "bogus"})
    assert resp.status_code == 400 and "state" in resp.json()["error"]["detail"]


# --- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query,expected", [
    ("hidden base", ["finetune.safetensors", "my_favourite_RENAMED.safetensors"]),  # model name
    ("RENAMED", ["my_favourite_RENAMED.safetensors"]),  # file name, any case
    ("/models/lora/", ["cut.safetensors", "ink.safetensors"]),  # path
    ("nothing-like-this", []),
], ids=["model-name", "file-name", "path", "no-hit"])
def test_search_by_name_path_or_model_name(client_alice, api, library, query, expected):
    assert sorted(page_names(client_alice, search=query)) == expected
    assert sorted(api_names(api, search=query)) == expected


@pytest.mark.parametrize("form", ["sha256", "SHA256-upper", "sha256-prefixed", "autov2", "crc32", "blake3-prefixed",
                                  "infotext"])
def test_search_by_any_hash_kind(client_alice, api, library, form):
    h = _hashes(b"mystery")
    query = {"sha256": h["sha256"], "SHA256-upper": h["sha256"].upper(), "sha256-prefixed": f"sha256:{h['sha256']}",
             "autov2": h["autov2"].upper(), "crc32": h["crc32"], "blake3-prefixed": f"blake3:{h['blake3']}",
             "infotext": f"Steps: 20, Model hash: {h['autov2']}, Model: mystery"}[form]
    assert page_names(client_alice, search=query) == ["mystery.ckpt"]
    assert api_names(api, search=query) == ["mystery.ckpt"]


def test_a_hash_search_finds_a_folder_through_a_member_and_says_how_it_was_read(client_alice, user):
    folder = _file(user, "sdxl-diffusers", is_folder=True)
    FolderMember.objects.create(folder=folder, relative_path="unet/m.safetensors", size=3, **_hashes(b"member"))
    sha = hashlib.sha256(b"member").hexdigest()
    resp = client_alice.get("/", {"search": sha})
    assert [html.unescape(n) for n in ROW_NAME.findall(resp.content.decode())] == ["sdxl-diffusers"]
    assert "Also searched as" in resp.content.decode() and "SHA256" in resp.content.decode()


def test_a_hash_search_never_finds_another_users_file(client_alice, api, library):
    sha = _hashes(b"renamed")["sha256"]
    assert page_names(client_alice, search=sha) == ["my_favourite_RENAMED.safetensors"]
    assert api_names(api, search=sha, scope="all") == ["my_favourite_RENAMED.safetensors"]


# --- sorts and keyset pages --------------------------------------------------------------------


def test_sorts(client_alice, api, library):
    newest = ["big.safetensors", "cut.safetensors", "mystery.ckpt", "finetune.safetensors", "ink.safetensors",
              "my_favourite_RENAMED.safetensors"]
    by_name = ["big.safetensors", "cut.safetensors", "finetune.safetensors", "ink.safetensors", "my_favourite_RENAMED.safetensors",
               "mystery.ckpt"]
    by_size = ["finetune.safetensors", "my_favourite_RENAMED.safetensors", "ink.safetensors", "mystery.ckpt",
               "cut.safetensors", "big.safetensors"]  # largest first, unknown size last
    # Model A-Z (the best match's model, partial counts; oldest first within a model), then the files
    # nothing matches, by name.
    by_model = ["my_favourite_RENAMED.safetensors", "finetune.safetensors", "ink.safetensors", "big.safetensors",
                "cut.safetensors", "mystery.ckpt"]
    for sort, expected in (("newest", newest), ("name", by_name), ("size", by_size), ("model", by_model)):
        assert page_names(client_alice, sort=sort) == expected, sort
        assert api_names(api, sort=sort) == expected, sort
    assert page_names(client_alice) == newest


def test_model_sort_uses_the_best_match_like_the_badge(client_alice, user):
    zebra, alpha = _model("Zebra Model"), _model("Alpha Model")
    _file(user, "z.safetensors", matches=[(zebra, "exact"), (alpha, "partial")])
    _file(user, "a.safetensors", matches=[(alpha, "exact")])
    assert page_names(client_alice, sort="model") == ["a.safetensors", "z.safetensors"]


def _walk(next_page, first: dict) -> tuple[list[int], int]:
    seen, params, pages = [], first, 0
    while params is not None:
        ids, params = next_page(params)
        seen += ids
        pages += 1
    return seen, pages


@pytest.mark.parametrize("sort", ["newest", "name", "size", "model"])
def test_keyset_pages_over_more_than_50_rows_have_every_row_once(client_alice, api, user, sort):
    sf = _model("Paged Model")
    for i in range(130):
        # Equal names and sizes across rows: the id breaks the ties, so nothing is skipped or repeated.
        _file(user, f"f{i % 40:03d}.safetensors", folder=f"/m/{i}", size=(i % 7) * 10 if i % 5 else None,
              matches=[(sf, "exact")] if i % 3 else [])
    every = set(LocalFile.objects.filter(owner=user).values_list("pk", flat=True))

    def page(params):
        text = client_alice.get("/", params).content.decode()
        ids = [int(x) for x in re.findall(r'<td class="name"><a href="/files/(\d+)/">', text)]
        nxt = re.search(r'<a href="\?([^"]*)" rel="next">', text)
        return ids, dict(re.findall(r"([^&=]+)=([^&]*)", html.unescape(nxt.group(1)))) if nxt else None

    seen, pages = _walk(page, {"sort": sort})
    assert len(seen) == len(set(seen)) == 130 and set(seen) == every and pages == 3

    def api_page(url):
        body = api.get(url).json()
        return [r["id"] for r in body["results"]], body["next"]

    seen, url = [], f"/api/v1/files/?sort={sort}&page_size=50"
    while url:
        ids, url = api_page(url)
        seen += ids
    assert len(seen) == len(set(seen)) == 130 and set(seen) == every
    assert seen == [int(x) for x in _page_ids_in_order(client_alice, sort)]


def _page_ids_in_order(client, sort):
    ids, params = [], {"sort": sort}
    while params is not None:
        text = client.get("/", params).content.decode()
        ids += re.findall(r'<td class="name"><a href="/files/(\d+)/">', text)
        nxt = re.search(r'<a href="\?([^"]*)" rel="next">', text)
        params = dict(re.findall(r"([^&=]+)=([^&]*)", html.unescape(nxt.group(1)))) if nxt else None
    return ids


def test_a_cursor_that_is_not_one_gives_the_first_page(client_alice, api, library):
    first = page_names(client_alice)
    for junk in ("nonsense", "WzEsMl0", "W251bGwsMSwyXQ"):
        assert page_names(client_alice, cursor=junk) == first
        assert api_names(api, cursor=junk) == first


def test_the_first_page_polls_so_files_registered_meanwhile_appear(client_alice, user):
    _file(user, "old.safetensors")
    text = client_alice.get("/").content.decode()
    assert 'hx-trigger="every 10s"' in text and 'hx-get="/"' in text
    _file(user, "registered-meanwhile.safetensors")
    fragment = client_alice.get("/", HTTP_HX_REQUEST="true").content.decode()
    assert "registered-meanwhile.safetensors" in fragment and "<html" not in fragment


def test_a_later_page_with_nothing_pending_does_not_poll(client_alice, user):
    for i in range(51):
        _file(user, f"f{i}.safetensors")
    text = client_alice.get("/").content.decode()
    cursor = re.search(r'cursor=([^"&]+)" rel="next"', text).group(1)
    later = client_alice.get("/", {"cursor": cursor}).content.decode()
    assert "hx-trigger" not in later and "« First page" in later


# --- query counts ----------------------------------------------------------------------------


def _seed(user, n: int, tag: str) -> None:
    """Matched and unmatched rows, some with what analysis leaves (JSON the list defers: reading it on a row
    would be a query a row) and some unreadable."""
    sf = _model(f"Counted {tag}")
    analysed = {"fingerprint": {"content_id": "c", "components": {"unet": {"content_id": "u"}}},
                "self_description": {"label": "LoRA for SDXL"}, "described_as": "LoRA for SDXL",
                "architecture": {"family": "SDXL", "evidence": ["x"]}, "architecture_family": "SDXL",
                "architecture_kind": "lora_kohya", "safety_findings": [{"severity": "info", "what": "w"}]}
    for i in range(n):
        extra = analysed if i % 3 == 0 else {}
        if i % 5 == 4:
            extra = {**extra, "safety_verdict": "unreadable", "analysis_error": "truncated"}
        _file(user, f"{tag}-{i}.safetensors", data=f"{tag}{i}".encode(), size=i, matches=[(sf, "exact")] if i % 2 else [],
              **extra)


@pytest.mark.parametrize("sort", ["newest", "model"])
def test_query_count_does_not_grow_with_the_rows_on_the_page(user, api, settings, sort):
    settings.CIVITAI_ENABLED = True  # the identities then also read Civitai lookups
    counts = {}
    for n in (5, 50):
        LocalFile.objects.all().delete()
        _seed(user, n, f"n{n}")
        client = Client()
        client.force_login(user)
        for where, call in (("page", lambda: client.get("/", {"sort": sort})),
                            ("api", lambda: api.get("/api/v1/files/", {"sort": sort}))):
            call()  # warm: a token's "last used" is written at most once a while, on its first use
            with CaptureQueriesContext(connection) as ctx:
                assert call().status_code == 200
            counts[(where, n)] = len(ctx)
    assert counts[("page", 5)] == counts[("page", 50)], counts
    assert counts[("api", 5)] == counts[("api", 50)], counts


# --- the API row ------------------------------------------------------------------------------


def test_api_rows_carry_identity_and_safety(api, library):
    rows = {r["name"]: r for r in api.get("/api/v1/files/").json()["results"]}
    renamed = rows["my_favourite_RENAMED.safetensors"]
    identity = renamed["identity"]
    assert identity["state"] == "identified" and identity["match_kind"] == "renamed" and identity["badge"] == "renamed copy"
    assert identity["summary"] == "renamed copy of Hidden Base Model v1.0 (file Hidden Base Model.safetensors)"
    assert (identity["model_name"], identity["version_name"], identity["model_type"], identity["base_model"]) == (
        "Hidden Base Model", "v1.0", "Checkpoint", "SD 1.5")
    assert renamed["safety_verdict"] == "safe" and renamed["best_match"] == "renamed"
    broken = rows["cut.safetensors"]["identity"]
    assert broken["state"] == "broken" and broken["problem"].startswith("truncated: 16 of 64")
    assert rows["big.safetensors"]["identity"]["is_finished"] is False


def test_api_file_detail_carries_the_identity_too(api, library):
    body = api.get(f"/api/v1/files/{library['lora'].pk}/").json()
    assert body["identity"]["model_name"] == "Ink Style" and body["identity"]["trained_words"] == ["inkstyle", "lineart"]


def test_the_analysis_stage_writes_how_many_tensor_bytes_it_has_read(user, tmp_path, monkeypatch):
    from models_catalog.services import analysis, hashing
    from tests.model_builders import write_safetensors

    monkeypatch.setattr(hashing, "PROGRESS_EVERY_SECONDS", 0)
    seen = []
    real = hashing.ProgressWriter.__call__

    def spy(self, done, total):
        real(self, done, total)
        seen.append((self.field, LocalFile.objects.get(pk=self.local_file_id).status,
                     LocalFile.objects.get(pk=self.local_file_id).analysed_bytes))

    monkeypatch.setattr(hashing.ProgressWriter, "__call__", spy)
    f = write_safetensors(tmp_path / "a.safetensors", payload=b"a" * 64)
    lf = LocalFile.objects.create(owner=user, origin="registered", path=str(f), name=f.name, status="analysing",
                                  bytes_done=f.stat().st_size, bytes_total=f.stat().st_size)
    analysis.local_file_analyse(local_file_id=lf.pk)
    assert seen == [("analysed_bytes", "analysing", 64)]
    lf.refresh_from_db()
    assert lf.status == "done" and lf.bytes_done == f.stat().st_size and lf.stage_started_at is not None


def test_a_whole_hash_is_searched_in_the_hash_indexes_only(api, library):
    """No name or path scan for a 64-hex or prefixed hash: that search costs an index lookup at any size."""
    sha = _hashes(b"mystery")["sha256"]
    for query in (sha, f"sha256:{sha}"):
        with CaptureQueriesContext(connection) as ctx:
            assert api_names(api, search=query) == ["mystery.ckpt"]
        assert not any("LIKE" in q["sql"] for q in ctx.captured_queries), query
    with CaptureQueriesContext(connection) as ctx:
        api_names(api, search=sha[:8])  # 8 hex may well be part of a name: names are searched too
    assert any("LIKE" in q["sql"] for q in ctx.captured_queries)


def test_the_folder_filter_means_that_folder_and_below_exactly(client_alice, api, user):
    for path in ("/m/lora", "/m/lora/sub", "/m/lora-extra", "/m/lora0", "/m/LORA", "/m"):
        _file(user, f"in {path.replace('/', '_')}.safetensors", folder=path)
    expected = ["in _m_lora.safetensors", "in _m_lora_sub.safetensors"]
    assert sorted(page_names(client_alice, folder="/m/lora")) == expected
    assert sorted(api_names(api, folder="/m/lora/")) == expected


def test_matching_stores_the_model_sort_key_and_the_migration_fills_it_for_old_rows(user):
    import importlib

    from django.apps import apps

    from models_catalog.services.matching import local_file_match

    data = b"weights"
    sf = _model("Zeta Model")
    SourceFile.objects.filter(pk=sf.pk).update(**_hashes(data))
    lf = _file(user, "copy.safetensors", data=data)
    local_file_match(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.best_model_name == "Zeta Model" and lf.matches.get().kind == "renamed"
    SourceFile.objects.filter(pk=sf.pk).update(sha256="0" * 64, sha256_12="0" * 12, blake3="", autov2="", crc32="")
    local_file_match(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.best_model_name == "" and not lf.matches.exists()

    other = _model("Alpha Model", source="huggingface")
    old = _file(user, "old.safetensors")
    for target, kind in ((other, "exact"), (sf, "exact"), (other, "partial")):  # Civitai wins a tie
        Match.objects.create(local_file=old, source_file=target, kind=kind, evidence="e")
    migration = importlib.import_module("models_catalog.migrations.0010_file_list_pages")
    migration.fill_best_model_names(apps, None)
    old.refresh_from_db()
    assert old.best_model_name == "Zeta Model"
    best_model_names_sync(local_file_ids=[old.pk])  # the app's rule agrees with the migration's copy
    old.refresh_from_db()
    assert old.best_model_name == "Zeta Model"


def test_the_filter_suggestions_are_reused_for_a_while_then_read_again(settings, db, django_assert_num_queries):
    from models_catalog import selectors
    from models_catalog.models import SourceModel, SourceVersion

    model = SourceModel.objects.create(source="civitai", external_id="901", name="Choices", type="LORA")
    SourceVersion.objects.create(model=model, external_id="9010", name="v1", base_model="Illustrious")
    settings.FILTER_CHOICES_SECONDS = 60
    selectors._choices_cache.clear()
    assert "Illustrious" in selectors.file_filter_choices()["base_models"]
    SourceVersion.objects.create(model=model, external_id="9011", name="v2", base_model="NoobAI")
    with django_assert_num_queries(0):  # within the minute: the same answer, no query
        assert "NoobAI" not in selectors.file_filter_choices()["base_models"]
    settings.FILTER_CHOICES_SECONDS = 0
    assert "NoobAI" in selectors.file_filter_choices()["base_models"]


def test_a_users_catalog_suggestions_are_shared_by_every_web_process(settings, db, django_assert_num_queries):
    """Each process computed them for each user it served: ~35 ms of a catalog page at 10,000 files."""
    from django.core.cache import cache
    from models_catalog import selectors
    from tests.factories import catalog_file, local_file, match

    owner = get_user_model().objects.create_user("choices-owner", password="pw-123456")
    match(local_file(owner, "s.safetensors", data=b"shared"), catalog_file("Shared", type_="Wildcards",
                                                                          base_model="Illustrious"))
    settings.FILTER_CHOICES_SECONDS = 60
    cache.clear()
    selectors._choices_cache.clear()
    first = selectors.my_catalog_choices(owner)
    assert "Illustrious" in first["base_models"] and "Wildcards" in first["types"]
    selectors._choices_cache.clear()  # another web process: nothing of its own yet
    with django_assert_num_queries(0):
        assert selectors.my_catalog_choices(owner) == first


def test_a_users_catalog_type_suggestions_cover_every_matched_model(settings, db):
    """The types were read from the first 200 matched models' rows, not from 200 distinct types."""
    from models_catalog import selectors
    from tests.factories import catalog_file, local_file, match

    owner = get_user_model().objects.create_user("many-models", password="pw-123456")
    for i in range(201):
        match(local_file(owner, f"m{i}.safetensors"), catalog_file(f"Lora {i}", type_="LORA", data=b"m%d" % i))
    match(local_file(owner, "last.safetensors"), catalog_file("Poses", type_="Poses", data=b"poses"))
    settings.FILTER_CHOICES_SECONDS = 0
    assert "Poses" in selectors.my_catalog_choices(owner)["types"]
