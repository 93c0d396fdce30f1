"""What a file says about itself, through the real register -> hash -> analyse path: stored, shown on the
file page, the API and `inspect`, naming an unknown LoRA in My files and `register --wait`, and searchable."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from models_catalog.identity import file_identities
from models_catalog.library_report import library_report
from models_catalog.models import LocalFile
from models_catalog.services.hashing import local_files_hash
from models_catalog.services.register import local_file_register
from tests.factories import KOHYA, SDXL_LORA, write_lora  # noqa: F401

pytestmark = pytest.mark.django_db

def test_analysis_stores_the_description_its_label_and_search_words(unknown_lora):
    d = unknown_lora.self_description
    assert (d["type_guess"], d["base_guess"], d["title"]) == ("LoRA", "SDXL", "my_style_v3")
    assert unknown_lora.described_as == "LoRA for SDXL: my_style_v3"
    assert "inkwash" in unknown_lora.described_words


def test_an_unknown_lora_is_named_by_what_it_says(unknown_lora, user, client, django_assert_max_num_queries):
    [identity] = file_identities([unknown_lora], viewer=user).values()
    assert identity.state == "unknown"
    assert identity.summary == "unknown LoRA for SDXL: my_style_v3"
    [row] = library_report(local_file_ids=[unknown_lora.pk], viewer=user).rows
    assert row.what == "unknown LoRA for SDXL: my_style_v3"
    client.force_login(user)
    page = client.get("/").content.decode()
    assert "LoRA for SDXL: my_style_v3" in page


def test_register_wait_table_names_the_unknown_lora(unknown_lora, user):
    out = io.StringIO()
    call_command("register", unknown_lora.path, "--wait", "--user", user.username, stdout=out)
    assert "unknown LoRA for SDXL: my_style_v3" in out.getvalue()


def test_file_page_api_and_inspect_show_what_the_file_says(unknown_lora, user, client):
    client.force_login(user)
    page = client.get(f"/files/{unknown_lora.pk}/").content.decode()
    assert "What the file says about itself" in page
    for text in ("my_style_v3", "LoRA for SDXL", "dim 16", "alpha 8", "(1024, 1024)", "7 of 10", "Jo Painter",
                 "inkwash", "lora_down"):
        assert text in page, text
    api = client.get(f"/api/v1/files/{unknown_lora.pk}/").json()
    assert api["self_description"]["label"] == "LoRA for SDXL: my_style_v3"
    assert api["self_description"]["top_tags"][0] == ["inkwash", 9]
    assert api["identity"]["described_as"] == "LoRA for SDXL: my_style_v3"
    out = io.StringIO()
    call_command("inspect", unknown_lora.path, stdout=out)
    text = out.getvalue()
    assert "What the file says about itself" in text and "LoRA for SDXL" in text and "inkwash (9)" in text


def test_my_files_search_finds_a_file_by_its_title_and_tags(unknown_lora, user, client, model_root, sent_for_hashing):
    other = write_lora(model_root / "other.safetensors", seed=3, metadata={"ss_output_name": "plain"})
    local_file_register(paths=[str(other)], owner=user)
    local_files_hash(local_file_ids=sent_for_hashing)
    client.force_login(user)
    for text in ("my_style", "INKWASH"):
        names = [f["name"] for f in client.get("/api/v1/files/", {"search": text}).json()["results"]]
        assert names == ["lora_0001.safetensors"], text


def test_describe_files_backfills_rows_analysed_before_descriptions(unknown_lora):
    LocalFile.objects.filter(pk=unknown_lora.pk).update(self_description=None, described_as="", described_words="")
    out = io.StringIO()
    call_command("describe_files", stdout=out)
    assert "1/1 files read, 1 described" in out.getvalue()
    assert LocalFile.objects.get(pk=unknown_lora.pk).described_as == "LoRA for SDXL: my_style_v3"


def test_lookup_of_my_unknown_file_names_it(unknown_lora, user):
    out = io.StringIO()
    call_command("lookup", unknown_lora.hashes.sha256, "--offline", "--user", user.username, stdout=out)
    assert "unknown LoRA for SDXL: my_style_v3" in out.getvalue()
