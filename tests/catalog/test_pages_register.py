"""The Register page: a path under the model roots, the same service as the CLI and the API."""
from __future__ import annotations

import html
import re
from urllib.parse import quote

import pytest
from django.test import Client

from models_catalog.models import LocalFile
from models_catalog.services import register as register_service
from tests.model_builders import write_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(sent_for_hashing):
    """Record the ids sent to the hashing queue instead of running the tasks."""
    return sent_for_hashing


@pytest.fixture
def alice(user):
    c = Client()
    c.force_login(user)
    return c


def page_text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


def test_anonymous_users_are_sent_to_sign_in(client, model_root):
    for response in (client.get("/register/"), client.post("/register/", {"path": str(model_root)})):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not LocalFile.objects.exists()


def test_page_lists_the_roots_and_a_root_fills_the_path_box(alice, model_root, settings, tmp_path):
    settings.MODEL_ROOTS = [model_root, tmp_path / "unplugged-disk"]
    body = alice.get("/register/").content.decode()
    assert f'<a class="root" href="?path={quote(str(model_root), safe="")}"><code>{model_root}</code></a>' in body
    assert "unplugged-disk</code> <span class=\"badge warn\">unusable: it does not exist</span>" in body
    assert 'name="path"' in body and 'value="' not in body.split('name="path"')[1].split(">")[0]
    filled = alice.get("/register/", {"path": str(model_root)}).content.decode()
    assert f'value="{model_root}"' in filled


def test_registering_a_folder_queues_its_model_files(alice, model_root, user, queued):
    (model_root / "loras").mkdir()
    write_safetensors(model_root / "loras" / "a.safetensors")
    write_safetensors(model_root / "loras" / "b.safetensors")
    (model_root / "loras" / "notes.txt").write_text("not a model")
    response = alice.post("/register/", {"path": str(model_root / "loras")})
    assert response.status_code == 200
    rows = LocalFile.objects.filter(owner=user).order_by("path")
    assert [r.name for r in rows] == ["a.safetensors", "b.safetensors"]
    assert [r.status for r in rows] == ["queued", "queued"] and sorted(queued) == sorted(r.pk for r in rows)
    text = page_text(response)
    assert "2 queued 0 unchanged 0 failed 0 refused" in text
    assert str(model_root / "loras" / "a.safetensors") in text
    assert 'href="/"' in response.content.decode() and "Follow the progress on My files" in text

    again = page_text(alice.post("/register/", {"path": str(model_root / "loras")}))
    assert "0 queued 2 unchanged" in again  # on their way already: nothing queued twice
    assert len(queued) == 2


def test_a_path_outside_the_roots_is_refused_with_its_reason(alice, model_root, tmp_path, queued):
    outside = write_safetensors(tmp_path / "secret.safetensors")
    response = alice.post("/register/", {"path": str(outside)})
    assert response.status_code == 400
    text = page_text(response)
    assert "0 queued 0 unchanged 0 failed 1 refused" in text
    assert f"{outside} is outside the model roots ({model_root})" in text
    assert "Traceback" not in text and not LocalFile.objects.exists() and not queued


def test_symlink_and_dotdot_escapes_are_refused(alice, model_root, tmp_path, queued):
    write_safetensors(tmp_path / "secret.safetensors")
    (model_root / "link.safetensors").symlink_to(tmp_path / "secret.safetensors")
    link = page_text(alice.post("/register/", {"path": str(model_root / "link.safetensors")}))
    assert "1 refused" in link and "which is outside the model roots" in link
    dotdot = page_text(alice.post("/register/", {"path": f"{model_root}/../secret.safetensors"}))
    # As in the API: a path outside the roots on its face learns nothing about what lies there.
    assert f"{model_root}/../secret.safetensors is outside the model roots ({model_root})" in dotdot
    assert "resolves to" not in dotdot
    assert not LocalFile.objects.exists() and not queued


def test_a_missing_path_under_a_root_says_so(alice, model_root, queued):
    text = page_text(alice.post("/register/", {"path": str(model_root / "nope")}))
    assert f"{model_root / 'nope'}: no such file or folder" in text


def test_a_fifo_fails_with_its_reason_and_links_to_its_row(alice, model_root, queued):
    import os

    os.mkfifo(model_root / "pipe.safetensors")
    response = alice.post("/register/", {"path": str(model_root / "pipe.safetensors")})
    row = LocalFile.objects.get()
    assert "1 failed" in page_text(response) and "not a regular file" in page_text(response)
    assert f'href="/files/{row.pk}/"' in response.content.decode()


def test_hostile_names_are_shown_escaped(alice, model_root, queued):
    write_safetensors(model_root / "evil\x1b[2Jname.safetensors")
    body = alice.post("/register/", {"path": str(model_root)}).content.decode()
    assert "\x1b" not in body and "evil\\x1b[2Jname.safetensors" in body


def test_the_form_is_csrf_protected(user, model_root, queued):
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    assert c.post("/register/", {"path": str(model_root)}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', c.get("/register/").content.decode()).group(1)
    assert c.post("/register/", {"path": str(model_root), "csrfmiddlewaretoken": token}).status_code == 200


def test_without_roots_the_page_says_registering_is_off_and_how_to_turn_it_on(alice, settings, tmp_path, queued):
    settings.MODEL_ROOTS = []
    text = page_text(alice.get("/register/"))
    assert "Registering in place is off" in text and "MODELXREF_MODEL_ROOTS=/path/to/models make run" in text
    refused = page_text(alice.post("/register/", {"path": str(tmp_path)}))
    assert "1 refused" in refused and "MODELXREF_MODEL_ROOTS=/path/to/models make run" in refused


def test_an_empty_path_is_a_form_error(alice, model_root, queued):
    response = alice.post("/register/", {"path": ""})
    assert response.status_code == 400 and "This field is required" in page_text(response)


def test_nav_and_my_files_link_to_the_page(alice):
    for url in ("/", "/catalog/"):
        assert 'href="/register/"' in alice.get(url).content.decode()
    assert "Register a folder on this server" in page_text(alice.get("/"))


def test_page_and_api_share_one_service(alice, model_root, monkeypatch):
    calls = []

    def spy(*, paths, owner, roots=None):
        calls.append((tuple(paths), owner.username))
        return register_service.RegisterOutcome()

    monkeypatch.setattr("models_catalog.views_register.local_file_register", spy)
    monkeypatch.setattr("models_catalog.api.local_file_register", spy)
    alice.post("/register/", {"path": str(model_root)})
    alice.post("/api/v1/files/register/", {"paths": [str(model_root)]}, content_type="application/json")
    assert calls == [((str(model_root),), "alice")] * 2
