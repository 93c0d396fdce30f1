"""The file page: what the file is comes first, before its hashes; a file that cannot be read says why, in words."""
from __future__ import annotations

import pytest
from django.test import Client

from models_catalog.models import FileHashes, Match
from tests.factories import catalog_model_file as _model, hashes_of as _hashes, library_file as _file  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_alice(user):
    c = Client()
    c.force_login(user)
    return c


def _page(client, lf) -> str:
    resp = client.get(f"/files/{lf.pk}/")
    assert resp.status_code == 200
    return resp.content.decode()


def test_what_it_is_comes_before_the_hashes(client_alice, user):
    sf = _model("Hidden Base Model", type_="Checkpoint", base="SD 1.5", words=("hb_style", "masterpiece"))
    lf = _file(user, "my_favourite_RENAMED.safetensors", data=b"renamed", matches=[(sf, "renamed")])
    text = _page(client_alice, lf)
    what, hashes = text.index(">What it is<"), text.index(">Hashes<")
    assert what < hashes
    head = text[what:hashes]
    assert "Renamed copy of Hidden Base Model v1.0 (file Hidden Base Model.safetensors)." in head
    for fact in ("Hidden Base Model", "v1.0", "Checkpoint", "SD 1.5", "renamed copy", "renamed evidence for",
                 "verdict-safe"):
        assert fact in head, fact
    assert text.index(_hashes(b"renamed")["sha256"].upper()) > hashes


def test_trained_words_each_have_a_copy_button_and_all_of_them_one(client_alice, user):
    sf = _model("Ink Style", type_="LORA", words=("inkstyle", "lineart"))
    lf = _file(user, "ink.safetensors", matches=[(sf, "exact")])
    text = _page(client_alice, lf)
    assert 'data-copy="inkstyle"' in text and 'data-copy="lineart"' in text
    assert 'data-copy="inkstyle, lineart"' in text and 'aria-label="Copy all trained words"' in text


def test_a_truncated_file_is_shown_broken_with_the_reason_in_words(client_alice, user):
    lf = _file(user, "cut.safetensors", data=b"cut", safety_verdict="unreadable",
               analysis_error="truncated: 16 of 64 data bytes present — an incomplete download?",
               safety_findings=[{"severity": "unreadable", "what": "tensor data", "where": "cut.safetensors",
                                 "why": "truncated: 16 of 64 data bytes present — an incomplete download?"}])
    text = _page(client_alice, lf)
    status = text[text.index('class="status-line"'):text.index(">What it is<")]
    assert "st-broken" in status and ">broken<" in status and "st-done" not in status and ">done<" not in status
    assert "This file could not be read:</strong> truncated: 16 of 64 data bytes present — an incomplete download?" in text
    assert "b&#x27;" not in text and "b'" not in text and "Traceback" not in text


def test_a_file_that_could_not_be_hashed_is_broken_with_its_error(client_alice, user):
    lf = _file(user, "gone.safetensors", status="error", safety_verdict="",
               error="the file is gone: it was moved or deleted after it was registered")
    text = _page(client_alice, lf)
    assert "st-broken" in text and "This file could not be read:</strong> the file is gone" in text
    assert "st-done" not in text and 'hx-trigger' not in text


def test_a_file_being_read_polls_and_says_so_in_what_it_is(client_alice, user):
    lf = _file(user, "big.safetensors", status="analysing", safety_verdict="", bytes_total=100, analysed_bytes=30)
    text = _page(client_alice, lf)
    assert 'hx-trigger="every 2s"' in text and "reading tensors" in text and "30%" in text
    assert "Still being read" in text


def test_a_file_waiting_for_civitai_says_until_when_and_keeps_polling(client_alice, user, settings):
    from datetime import timedelta

    from django.utils import timezone

    from models_catalog.models import CivitaiLookup

    settings.CIVITAI_ENABLED = True
    lf = _file(user, "new.safetensors", data=b"new")
    CivitaiLookup.objects.create(kind="SHA256", value=_hashes(b"new")["sha256"].upper(), state="pending",
                                 not_before=timezone.now() + timedelta(minutes=1), last_error="HTTP 429")
    text = _page(client_alice, lf)
    assert "st-waiting" in text and "retrying at" in text and 'hx-trigger="every 10s"' in text


def test_every_match_is_listed_when_there_is_more_than_one(client_alice, user):
    base, other = _model("Hidden Base Model"), _model("Other Mix")
    lf = _file(user, "x.safetensors", matches=[(base, "precision"), (other, "partial")])
    text = _page(client_alice, lf)
    assert "Every match" in text and "Other Mix" in text and "Precision variant of Hidden Base Model" in text


def test_hashes_and_the_path_have_copy_buttons(client_alice, user):
    lf = _file(user, "a.safetensors", data=b"abc")
    text = _page(client_alice, lf)
    assert f'data-copy="{_hashes(b"abc")["sha256"].upper()}"' in text and 'aria-label="Copy the path"' in text
    assert FileHashes.objects.filter(local_file=lf).exists() and not Match.objects.exists()
