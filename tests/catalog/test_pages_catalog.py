"""Catalog, model page and hash lookup pages. Rows are seeded directly (Civitai is off in tests).

The seed helpers here are imported by the other test_pages_* modules.
"""
import hashlib
import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models_catalog.models import Match, SourceModel
from models_catalog.selectors import CatalogQuery, catalog_page
from tests.factories import fp, login, page, seed_local, seed_model
from workers.hash_parse import HashQueryError
from workers.hash_query import parse_hash_query

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(user):
    return login(user)





# --- catalog ------------------------------------------------------------------


def test_catalog_empty_states_tell_what_to_do(alice):
    mine = page(alice, "/catalog/")
    assert "None of your files is identified yet" in mine and 'href="/upload/"' in mine
    assert "The catalog is empty" in page(alice, "/catalog/", scope="all")


def test_catalog_lists_models_my_files_match_and_all_on_toggle(alice, user):
    _, _, (sf,) = seed_model("Dreamshaper", files=[{"name": "ds.safetensors", "data": b"ds"}])
    seed_model("Unheld Model")
    Match.objects.create(local_file=seed_local(user, "ds.safetensors", data=b"ds"), source_file=sf, kind="exact", evidence="SHA256 equal")
    mine = page(alice, "/catalog/")
    assert "Dreamshaper" in mine and "Unheld Model" not in mine
    everything = page(alice, "/catalog/", scope="all")
    assert "Dreamshaper" in everything and "Unheld Model" in everything


def test_catalog_row_shows_type_base_sources_formats_copies_and_worst_safety(alice, user):
    model, _, (sf,) = seed_model("Juggernaut", type="Checkpoint", base="SDXL 1.0", files=[{"name": "j.safetensors", "data": b"j"}])
    _, _, (hf_sf,) = seed_model("org/juggernaut", source="huggingface", type="Repository", files=[{"name": "j.safetensors", "data": b"j"}])
    a = seed_local(user, "j.safetensors", data=b"j", fingerprint=fp("F16"))
    b = seed_local(user, "j.ckpt", fmt="torch-zip", verdict="dangerous", fingerprint=fp("F32", precision="p1"))
    Match.objects.create(local_file=a, source_file=sf, kind="exact", evidence="SHA256 equal")
    Match.objects.create(local_file=a, source_file=hf_sf, kind="exact", evidence="SHA256 equal")
    Match.objects.create(local_file=b, source_file=sf, kind="converted", evidence="same tensors")
    html_ = page(alice, "/catalog/", q="Juggernaut")
    row = re.search(r"<tr>\s*<td><a href=\"/models/%d/\">.*?</tr>" % model.pk, html_, re.S).group(0)
    assert "Checkpoint" in row and "SDXL 1.0" in row
    assert "src-civitai" in row and "src-huggingface" in row  # also on the Hub through the same local file
    assert "safetensors fp16" in row and "torch-zip fp32" in row
    assert '<td class="num">2</td>' in row
    assert "verdict-dangerous" in row and "verdict-safe" not in row


def _catalog_names(client, **params):
    html_ = page(client, "/catalog/", **params)
    return re.findall(r'<a href="/models/\d+/">([^<]+)</a>', html_)


def test_search_by_name_trigger_word_and_hash(alice, user):
    _, _, (sf,) = seed_model("Pastel Mix", words=["pastelmix", "soft light"], files=[{"name": "p.safetensors", "data": b"pastel"}])
    _, _, (other,) = seed_model("Anything V5", files=[{"name": "a.safetensors", "data": b"anything"}])
    for lf_name, s, data in (("p.safetensors", sf, b"pastel"), ("a.safetensors", other, b"anything")):
        Match.objects.create(local_file=seed_local(user, lf_name, data=data), source_file=s, kind="exact", evidence="x")
    assert _catalog_names(alice, q="pastel") == ["Pastel Mix"]
    assert _catalog_names(alice, q="SOFT LIGHT") == ["Pastel Mix"]
    assert _catalog_names(alice, q=hashlib.sha256(b"anything").hexdigest()[:10].upper()) == ["Anything V5"]
    assert _catalog_names(alice, q="sha256:" + hashlib.sha256(b"pastel").hexdigest()) == ["Pastel Mix"]


def test_hash_search_says_which_kinds_were_tried(alice):
    _, _, (sf,) = seed_model("Crc Model", files=[{"name": "c.safetensors", "data": b"crc"}])
    html_ = page(alice, "/catalog/", q=sf.crc32, scope="all")
    assert "Crc Model" in html_ and "tried as AutoV1, CRC32" in html_


def test_hash_search_finds_model_through_my_local_file(alice, user):
    _, _, (sf,) = seed_model("Via Local", files=[{"name": "v.safetensors", "data": b"source-bytes"}])
    lf = seed_local(user, "renamed.ckpt", data=b"local-bytes")
    Match.objects.create(local_file=lf, source_file=sf, kind="converted", evidence="same tensors")
    assert _catalog_names(alice, q=hashlib.sha256(b"local-bytes").hexdigest()) == ["Via Local"]


@pytest.fixture
def filter_world(user):
    """Two models held by alice that differ in every filterable way."""
    _, _, (a,) = seed_model("Alpha", type="LORA", base="SDXL 1.0", files=[{"name": "a", "data": b"a"}])
    _, _, (b,) = seed_model("Beta", source="huggingface", type="Checkpoint", base="SD 1.5", files=[{"name": "b", "data": b"b"}])
    Match.objects.create(local_file=seed_local(user, "a", data=b"a", fmt="safetensors", verdict="safe"), source_file=a,
                         kind="exact", evidence="x")
    Match.objects.create(local_file=seed_local(user, "b", data=b"b", fmt="torch-zip", verdict="dangerous"), source_file=b,
                         kind="short-hash", evidence="x")


@pytest.mark.parametrize("params,expected", [
    ({"type": "LORA"}, ["Alpha"]),
    ({"base_model": "SD 1.5"}, ["Beta"]),
    ({"source": "huggingface"}, ["Beta"]),
    ({"format": "safetensors"}, ["Alpha"]),
    ({"safety": "dangerous"}, ["Beta"]),
    ({"kind": "exact"}, ["Alpha"]),
    ({"kind": "short-hash", "scope": "all"}, ["Beta"]),
    ({}, ["Alpha", "Beta"]),
])
def test_filters_narrow_the_catalog(alice, filter_world, params, expected):
    assert _catalog_names(alice, **params) == expected


def test_invalid_filter_values_do_not_break_the_page(alice, filter_world):
    assert _catalog_names(alice, source="nope", sort="weird", after="!!garbage") == ["Alpha", "Beta"]
    assert _catalog_names(alice, source="nope", type="LORA") == ["Alpha"]  # the valid filter still applies


def _walk(client, **params):
    """Follow 'Next page' links to the end; returns every model link in order."""
    seen, url, pages = [], "/catalog/", 0
    query = params
    while True:
        html_ = page(client, url, **query)
        seen += [int(x) for x in re.findall(r'<a href="/models/(\d+)/">', html_)]
        pages += 1
        nxt = re.search(r'<a href="(\?[^"]+)" rel="next">', html_)
        if not nxt:
            return seen, pages
        url, query = "/catalog/" + html.unescape(nxt.group(1)), {}


@pytest.mark.parametrize("sort", ["name", "newest"])
def test_keyset_pagination_visits_every_model_once_in_order(alice, sort):
    # Repeated names test the id tie-break of the (name, id) key.
    SourceModel.objects.bulk_create(
        SourceModel(source="civitai", external_id=str(i), name=f"model {i % 40:03d}") for i in range(123))
    ids, pages = _walk(alice, scope="all", sort=sort)
    assert pages == 3 and len(ids) == 123 and len(set(ids)) == 123
    rows = SourceModel.objects.in_bulk(ids)
    keys = [(rows[i].name, i) for i in ids] if sort == "name" else [-i for i in ids]
    assert keys == sorted(keys)


def test_next_page_keeps_filters_and_search(alice):
    SourceModel.objects.bulk_create(
        [SourceModel(source="civitai", external_id=str(i), name=f"keep {i:03d}", type="LORA") for i in range(60)]
        + [SourceModel(source="civitai", external_id=f"x{i}", name=f"keep {i:03d}", type="VAE") for i in range(60)])
    ids, pages = _walk(alice, scope="all", q="keep", type="LORA")
    assert pages == 2 and len(set(ids)) == 60
    assert set(SourceModel.objects.filter(pk__in=ids).values_list("type", flat=True)) == {"LORA"}


def test_catalog_page_never_counts_the_table_and_uses_few_queries(user):
    SourceModel.objects.bulk_create(SourceModel(source="civitai", external_id=str(i), name=f"m{i:04d}") for i in range(300))
    first = catalog_page(CatalogQuery(user=user, scope="all"))
    with CaptureQueriesContext(connection) as queries:
        second = catalog_page(CatalogQuery(user=user, scope="all", after=first.next_cursor))
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "COUNT(" not in sql and "OFFSET" not in sql
    assert len(queries.captured_queries) <= 6
    assert not {r.model.pk for r in first.rows} & {r.model.pk for r in second.rows}


# --- model page ---------------------------------------------------------------


def test_model_page_shows_versions_files_hashes_copies_and_links(alice, user):
    model, version, (sf, ckpt) = seed_model(
        "Realistic Vision", words=["rvtrigger"], base="SD 1.5",
        files=[{"name": "rv.safetensors", "data": b"rv", "format": "SafeTensor", "fp": "fp16", "size": 2 * 1024 ** 3,
                "source_scan": "Success", "source_scan_message": "No Pickle imports"},
               {"name": "rv.ckpt", "data": b"rvckpt", "format": "PickleTensor", "fp": "fp32"}])
    lf = seed_local(user, "my-rv.safetensors", data=b"rv")
    Match.objects.create(local_file=lf, source_file=sf, kind="renamed", evidence="SHA256 equal to rv.safetensors (here named my-rv.safetensors)")
    html_ = page(alice, f"/models/{model.pk}/")
    for field in ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3"):
        assert f'data-copy="{getattr(sf, field).upper()}"' in html_
        assert f'data-copy="{getattr(ckpt, field).upper()}"' in html_
    assert "rv.ckpt" in html_ and "PickleTensor" in html_ and "fp32" in html_ and "2.0\xa0GB" in html_
    assert "Civitai scan: Success" in html_ and "No Pickle imports" in html_
    assert "rvtrigger" in html_ and version.url in html_ and model.url in html_
    assert f'href="/files/{lf.pk}/"' in html_ and "exact copy, renamed" in html_
    assert html.escape("(here named my-rv.safetensors)") in html_


def test_model_page_without_versions_and_unknown_model(alice):
    model = SourceModel.objects.create(source="civitai", external_id="1", name="Bare")
    assert "No versions of this model are known yet" in page(alice, f"/models/{model.pk}/")
    assert alice.get("/models/999999/").status_code == 404


# --- hash lookup ----------------------------------------------------------------


def test_lookup_empty_page_explains(alice):
    html_ = page(alice, "/lookup/")
    assert "Paste a hash" in html_ and 'method="get"' in html_


def test_lookup_ambiguous_8_char_hash_shows_both_kinds_and_note(alice):
    _, _, (sf,) = seed_model("Eight", files=[{"name": "e.safetensors", "data": b"eight"}])
    html_ = page(alice, "/lookup/", q=sf.crc32.upper())
    assert "AutoV1</span>" in html_ and "CRC32</span>" in html_
    assert html.escape(parse_hash_query(sf.crc32)[0].note) in html_
    assert "Eight" in html_ and "Civitai: not asked: already known here" in html_
    assert "the CRC32 agrees" in html_  # what the match means


def test_lookup_infotext_with_several_hashes(alice, user):
    _, _, (model_file,) = seed_model("Base Ckpt", files=[{"name": "base.safetensors", "data": b"base"}])
    _, _, (lora_file,) = seed_model("Cute Lora", type="LORA", files=[{"name": "cute.safetensors", "data": b"cute"}])
    infotext = (f"a cat\nNegative prompt: ugly\nSteps: 20, Model hash: {model_file.autov2}, Model: base, "
                f'Lora hashes: "cute: {lora_file.autov3}", Version: v1.9')
    html_ = page(alice, "/lookup/", q=infotext)
    assert "2 hashes in the query" in html_
    assert "Base Ckpt" in html_ and "Cute Lora" in html_ and "lora:cute" in html_
    assert f'href="/models/{model_file.version.model_id}/"' in html_


def test_lookup_shows_my_file_with_link(alice, user):
    lf = seed_local(user, "mine.safetensors", data=b"mine")
    html_ = page(alice, "/lookup/", q=hashlib.sha256(b"mine").hexdigest())
    assert f'href="/files/{lf.pk}/"' in html_ and "mine.safetensors" in html_


@pytest.mark.parametrize("text", ["not a hash", "md5:0123", "0123456789abcdef0123456789abcdef"])
def test_lookup_bad_query_is_a_friendly_error(alice, text):
    with pytest.raises(HashQueryError) as expected:
        parse_hash_query(text)
    resp = alice.get("/lookup/", {"q": text})
    assert resp.status_code == 400
    assert html.escape(str(expected.value)) in resp.content.decode()


def test_lookup_nothing_found_says_so(alice):
    assert "Nothing known has this hash" in page(alice, "/lookup/", q="0123456789")
