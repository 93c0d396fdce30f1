"""New versions (the hourly refresh marks models with a newer version than any held) and both Civitai
sites (the second asked only for the first one's misses), against two FakeCivitai stand-ins."""
import json
from datetime import datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from models_catalog.models import LocalFile, Match, SourceModel, SourceVersion
from models_catalog.services.civitai_lookup import civitai_models_check_updates, civitai_models_complete
from models_catalog.services.identify import civitai_batch_and_rematch, local_file_identify
from tests.factories import client_for, fingerprinted_file as _fingerprinted
from tests.fakes.civitai import FakeCivitai, fake_civitai, file_hashes  # noqa: F401

pytestmark = pytest.mark.django_db
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def civitai(fake_civitai, settings, monkeypatch):
    settings.CIVITAI_ENABLED = True
    settings.CIVITAI_API_BASE = fake_civitai.base_url
    settings.CIVITAI_UPDATES_CHECK_SECONDS = 0
    from models_catalog.services import identify

    monkeypatch.setattr(identify, "lookups_requested", lambda: None)
    return fake_civitai


@pytest.fixture
def red(settings):
    """The second site (civitai.red in production): a second stand-in."""
    with FakeCivitai() as fake:
        yield fake


def _identify(fake, user, name, sha, **kw):
    lf = _fingerprinted(user, name, fmt="safetensors", content_id="", precision_id="", sha=sha)
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(fake), **kw)
    return lf


def _two_versions(fake, *, early_access_ends_at=None):
    model_id = fake.add_model(name="Evolving LoRA", type="LORA")
    fake.add_version(model_id, id=601, name="v1.0", files=[{"name": "v1.safetensors", "hashes": file_hashes(sha256=A)}])
    return model_id


def _files_page(client, **params) -> str:
    return client.get("/", params).content.decode()


def test_refresh_marks_a_newer_version_for_the_filter_badge_and_command(civitai, user):
    model_id = _two_versions(civitai)
    lf = _identify(civitai, user, "evolving_v1.safetensors", A)
    other = _fingerprinted(user, "unrelated.safetensors", fmt="safetensors", content_id="", precision_id="", sha=C)
    client = Client()
    client.force_login(user)
    civitai_models_complete(client=client_for(civitai))
    assert "evolving_v1" in _files_page(client) and "evolving_v1" not in _files_page(client, updates="newer")

    civitai.add_version(model_id, id=602, name="v2.0", files=[{"name": "v2.safetensors", "hashes": file_hashes(sha256=B)}])
    assert civitai_models_check_updates(client=client_for(civitai)) == 1
    model = SourceModel.objects.get(external_id=str(model_id))
    assert model.newest_version.external_id == "602"

    filtered = _files_page(client, updates="newer")
    assert "evolving_v1.safetensors" in filtered and other.name not in filtered
    assert "v2.0 available" in filtered  # the row badge
    assert "v2.0 available" in client.get(f"/files/{lf.pk}/").content.decode()
    assert "v2.0 available" in client.get(f"/models/{model.pk}/").content.decode()
    out = StringIO()
    call_command("updates", "--json", "--user", user.username, stdout=out)
    rows = json.loads(out.getvalue())
    assert [(r["model"], r["have"], r["new"]["name"], r["new"]["early_access"]) for r in rows] == [
        ("Evolving LoRA", ["v1.0"], "v2.0", False)]
    assert rows[0]["new"]["url"].endswith(f"/models/{model_id}?modelVersionId=602")
    api = client.get("/api/v1/files/", {"updates": "newer"})
    if api.status_code == 200:  # session auth on the API: the same filter
        assert [r["name"] for r in api.json()["results"]] == ["evolving_v1.safetensors"]


def test_holding_the_newest_version_too_means_no_update(civitai, user, other_user):
    model_id = _two_versions(civitai)
    civitai.add_version(model_id, id=602, name="v2.0", files=[{"name": "v2.safetensors", "hashes": file_hashes(sha256=B)}])
    _identify(civitai, user, "v1.safetensors", A)
    _identify(civitai, other_user, "bobs_v2.safetensors", B)  # someone else's v2 does not update alice
    civitai_models_complete(client=client_for(civitai))
    out = StringIO()
    call_command("updates", "--json", "--user", user.username, stdout=out)
    assert [r["new"]["name"] for r in json.loads(out.getvalue())] == ["v2.0"]
    _identify(civitai, user, "v2.safetensors", B)
    out = StringIO()
    call_command("updates", "--json", "--user", user.username, stdout=out)
    assert json.loads(out.getvalue()) == []
    client = Client()
    client.force_login(user)
    page = _files_page(client, updates="newer")
    assert "v1.safetensors" not in page and "v2.0 available" not in page


def test_an_early_access_version_is_shown_as_such(civitai, user):
    model_id = _two_versions(civitai)
    lf = _identify(civitai, user, "v1.safetensors", A)
    ends = datetime.now(timezone.utc) + timedelta(days=5)
    civitai.add_version(model_id, id=602, name="v2.0 EA", early_access_ends_at=ends,
                        files=[{"name": "v2.safetensors", "hashes": file_hashes(sha256=B)}])
    civitai_models_complete(client=client_for(civitai))
    newest = SourceVersion.objects.get(external_id="602")
    assert newest.availability == "EarlyAccess" and newest.in_early_access
    client = Client()
    client.force_login(user)
    html = client.get(f"/files/{lf.pk}/").content.decode()
    assert "v2.0 EA available" in html and f"early access until {ends:%Y-%m-%d}" in html
    out = StringIO()
    call_command("updates", "--user", user.username, stdout=out)
    assert "early access" in out.getvalue() and "you have v1.0" in out.getvalue()


def test_the_updates_filter_keeps_the_fixed_query_count(civitai, user):
    model_id = _two_versions(civitai)
    client = Client()
    client.force_login(user)
    counts = []
    for n, sha in ((1, A), (3, None)):
        if sha:
            _identify(civitai, user, "v1.safetensors", sha)
            civitai.add_version(model_id, id=602, name="v2.0", files=[{"name": "v2.safetensors",
                                                                       "hashes": file_hashes(sha256=B)}])
            civitai_models_complete(client=client_for(civitai))
        else:
            source_file = Match.objects.get().source_file
            for i in range(2):
                extra = LocalFile.objects.create(owner=user, origin="pushed", path=f"/r/copy{i}", name=f"copy{i}",
                                                 status="done")
                Match.objects.create(local_file=extra, source_file=source_file, kind="renamed", evidence="test")
        _files_page(client, updates="newer")
        with CaptureQueriesContext(connection) as ctx:
            html = _files_page(client, updates="newer")
        assert html.count("v2.0 available") == n
        counts.append(len(ctx))
    assert counts[0] == counts[1], counts


# --- both Civitai sites -----------------------------------------------------------------------


def test_the_second_site_is_asked_only_for_misses_and_its_answer_links_there(civitai, red, user, monkeypatch):
    com_model = civitai.add_model(name="SFW model")
    civitai.add_version(com_model, files=[{"name": "sfw.safetensors", "hashes": file_hashes(sha256=A)}])
    # The two sites share one database (ids are unique across them): the stand-ins are given distinct ids.
    red_model = red.add_model(id=700_001, name="Red-only model", nsfw=True)
    red.add_version(red_model, id=800_001, files=[{"name": "red.safetensors", "hashes": file_hashes(sha256=B)}])
    files = [_fingerprinted(user, name, fmt="pickle", content_id="", precision_id="", sha=sha)
             for name, sha in (("sfw.ckpt", A), ("red.ckpt", B), ("nobody.ckpt", C))]
    for lf in files:
        local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai), others=[client_for(red)])
    assert civitai.count("POST", "/api/v1/model-versions/by-hash") == 1
    asked_red = [body for method, path, body in red.requests if method == "POST"]
    assert len(asked_red) == 1 and sorted(asked_red[0]) == [B.upper(), C.upper()]  # the misses only

    red_row = SourceModel.objects.get(name="Red-only model")
    assert red_row.site == red.origin and red_row.url == f"{red.origin}/models/{red_model}"
    assert SourceVersion.objects.get(model=red_row).site == red.origin
    com_row = SourceModel.objects.get(name="SFW model")
    assert com_row.site == "https://civitai.com" and com_row.url.startswith("https://civitai.com/models/")
    assert Match.objects.get(local_file=files[1]).source_file.version.model == red_row
    client = Client()
    client.force_login(user)
    page = client.get(f"/models/{red_row.pk}/").content.decode()
    assert f'href="{red_row.url}"' in page and "open on 127.0.0.1" in page

    # Refreshing a .red model asks .red, not .com.
    red.reset_log()
    civitai.reset_log()
    from models_catalog.services import civitai_lookup
    clients = [client_for(civitai), client_for(red)]
    monkeypatch.setattr(civitai_lookup, "civitai_clients", lambda **kw: clients)
    civitai_lookup._models_refresh([red_row], client=None)
    assert red.count("GET", "/api/v1/models") == 1 and civitai.count("GET", "/api/v1/models") == 0


def test_all_known_costs_the_second_site_nothing(civitai, red, user):
    model = civitai.add_model(name="Known")
    civitai.add_version(model, files=[{"name": "k.safetensors", "hashes": file_hashes(sha256=A)}])
    _identify(civitai, user, "k.safetensors", A, others=[client_for(red)])
    assert red.requests == [] and Match.objects.count() == 1


def test_default_bases_add_civitai_red_only_to_the_real_civitai(settings):
    from models_catalog.services.civitai_lookup import civitai_api_bases, civitai_site

    settings.CIVITAI_API_BASES = []
    settings.CIVITAI_API_BASE = "https://civitai.com/api/v1"
    assert civitai_api_bases() == ["https://civitai.com/api/v1", "https://civitai.red/api/v1"]
    settings.CIVITAI_API_BASE = "http://127.0.0.1:9/api/v1"
    assert civitai_api_bases() == ["http://127.0.0.1:9/api/v1"]
    settings.CIVITAI_API_BASES = ["https://civitai.red/api/v1"]
    assert civitai_api_bases() == ["https://civitai.red/api/v1"]
    assert civitai_site("https://civitai.red/api/v1") == "https://civitai.red"


def test_a_hash_lookup_asks_the_second_site_after_a_miss(civitai, red, user, monkeypatch):
    from models_catalog.services import lookup as lookup_service

    red_model = red.add_model(id=700_002, name="Only on red")
    red.add_version(red_model, id=800_002, files=[{"name": "r.safetensors", "hashes": file_hashes(sha256=C)}])
    monkeypatch.setattr(lookup_service, "civitai_clients", lambda: [client_for(civitai), client_for(red)])
    results = lookup_service.hash_lookup(text=C, user=user, ask_civitai=True)
    assert results[0].civitai == "hit"
    assert SourceModel.objects.get(name="Only on red").site == red.origin
    assert civitai.count("GET") == 1 and red.count("GET") == 1
