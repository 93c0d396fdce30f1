"""Linking an unknown file by hand: web form and API, the owner only, Civitai asked when it can be,
a URL-only link when it cannot, and never trusted as byte-exact or shown to anyone else."""
from __future__ import annotations

import pytest

from models_catalog.identity import file_identities
from models_catalog.models import LocalFile, Match, SourceVersion
from models_catalog.services.matching import local_file_match_loaded
from tests.fakes.civitai import fake_civitai  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def civitai(fake_civitai, settings):
    settings.CIVITAI_ENABLED = True
    settings.CIVITAI_API_BASE = fake_civitai.base_url
    mid = fake_civitai.add_model(name="Ink Wash Style", type="LORA")
    vid = fake_civitai.add_version(mid, name="v3", base_model="SDXL 1.0",
                                   files=[{"name": "inkwash_v3.safetensors"}])
    return mid, vid


def test_link_by_api_asks_civitai_and_names_the_file(unknown_lora, user, client, civitai):
    mid, vid = civitai
    client.force_login(user)
    answer = client.post(f"/api/v1/files/{unknown_lora.pk}/link/",
                         {"url": f"https://civitai.com/models/{mid}?modelVersionId={vid}"}, content_type="application/json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["url_only"] is False and "Ink Wash Style" in body["message"]
    assert body["identity"]["match_kind"] == "manual" and body["identity"]["badge"] == "linked by you"
    assert SourceVersion.objects.filter(external_id=str(vid), base_model="SDXL 1.0").exists()  # the catalog has it
    assert client.get(f"/api/v1/files/{unknown_lora.pk}/").json()["matches"][0]["kind"] == "manual"
    # Matching the file again keeps the owner's link; it is never one of the exact kinds.
    local_file_match_loaded(local_file=LocalFile.objects.select_related("hashes").get(pk=unknown_lora.pk))
    assert list(Match.objects.filter(local_file=unknown_lora).values_list("kind", flat=True)) == ["manual"]
    assert client.delete(f"/api/v1/files/{unknown_lora.pk}/link/").json() == {"removed": 1}
    assert not Match.objects.filter(local_file=unknown_lora).exists()


def test_link_by_web_form_with_civitai_red(unknown_lora, user, client, civitai):
    mid, vid = civitai
    client.force_login(user)
    page = client.get(f"/files/{unknown_lora.pk}/").content.decode()
    assert "Link it by hand" in page and "csrfmiddlewaretoken" in page
    done = client.post(f"/files/{unknown_lora.pk}/link/", {"url": f"https://civitai.red/models/{mid}?modelVersionId={vid}"},
                       follow=True)
    text = done.content.decode()
    assert "Linked to Ink Wash Style v3" in text and "linked by you" in text


def test_hugging_face_file_link(unknown_lora, user, client):
    client.force_login(user)
    answer = client.post(f"/api/v1/files/{unknown_lora.pk}/link/",
                         {"url": "https://huggingface.co/org/repo/blob/main/loras/style.safetensors"},
                         content_type="application/json")
    assert answer.status_code == 201
    assert answer.json()["identity"]["source_file_name"] == "style.safetensors"


def test_civitai_down_stores_the_url_only_and_says_so(unknown_lora, user, client, settings):
    settings.CIVITAI_ENABLED = True
    settings.CIVITAI_API_BASE = "http://127.0.0.1:9/api/v1"  # nothing listens there
    client.force_login(user)
    answer = client.post(f"/api/v1/files/{unknown_lora.pk}/link/",
                         {"url": "https://civitai.com/models/77?modelVersionId=88"}, content_type="application/json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["url_only"] is True and "could not be reached" in body["message"] and "URL only" in body["message"]
    assert body["identity"]["match_kind"] == "manual"
    done = client.post(f"/files/{unknown_lora.pk}/link/", {"url": "https://civitai.com/models/77?modelVersionId=88"},
                       follow=True)
    assert "URL only" in done.content.decode()


def test_another_users_file_is_404_and_never_shows_the_link(unknown_lora, user, other_user, client, settings):
    settings.CIVITAI_ENABLED = False
    client.force_login(other_user)
    url = "https://civitai.com/models/77?modelVersionId=88"
    assert client.post(f"/api/v1/files/{unknown_lora.pk}/link/", {"url": url}, content_type="application/json").status_code == 404
    assert client.post(f"/files/{unknown_lora.pk}/link/", {"url": url}).status_code == 404
    assert client.delete(f"/api/v1/files/{unknown_lora.pk}/link/").status_code == 404
    # Linked by its owner, the link is not shown even to staff.
    client.force_login(user)
    assert client.post(f"/api/v1/files/{unknown_lora.pk}/link/", {"url": url}, content_type="application/json").status_code == 201
    other_user.is_staff = True
    other_user.save()
    assert file_identities([unknown_lora], viewer=other_user)[unknown_lora.pk].match_kind == ""
    client.force_login(other_user)
    assert client.get(f"/api/v1/files/{unknown_lora.pk}/").json()["matches"] == []


def test_bad_links_are_refused_in_the_error_format(unknown_lora, user, client):
    client.force_login(user)
    for url in ("https://example.com/models/1", "ftp://civitai.com/models/1", "https://civitai.com/images/5",
                "https://huggingface.co/org/repo"):
        answer = client.post(f"/api/v1/files/{unknown_lora.pk}/link/", {"url": url}, content_type="application/json")
        assert answer.status_code == 400, url
        assert answer.json()["error"]["code"] == "bad_link"


def test_a_manual_link_is_never_byte_exact_evidence(unknown_lora, user, client, model_root, sent_for_hashing, settings):
    import shutil

    from models_catalog.services.duplicates import duplicate_groups
    from models_catalog.services.hashing import local_files_hash
    from models_catalog.services.register import local_file_register

    copy = model_root / "copy_of_lora.safetensors"
    shutil.copyfile(unknown_lora.path, copy)
    local_file_register(paths=[str(copy)], owner=user)
    local_files_hash(local_file_ids=sent_for_hashing)
    client.force_login(user)
    assert client.post(f"/api/v1/files/{unknown_lora.pk}/link/", {"url": "https://civitai.com/models/77?modelVersionId=88"},
                       content_type="application/json").status_code == 201
    [group] = duplicate_groups(owner=user)
    assert group.model is None and group.model_id is None  # the group names a model only from exact / renamed
    # The copy with the same bytes does not inherit the owner's statement.
    assert not Match.objects.filter(local_file__path=str(copy)).exists()


def test_staff_listing_everyone_cannot_find_other_users_hand_links(unknown_lora, user, other_user, client, settings):
    settings.CIVITAI_ENABLED = False
    client.force_login(user)
    client.post(f"/api/v1/files/{unknown_lora.pk}/link/", {"url": "https://civitai.com/models/77?modelVersionId=88"},
                content_type="application/json")
    mine = client.get("/api/v1/files/", {"match": "manual"}).json()["results"]
    assert [f["id"] for f in mine] == [unknown_lora.pk]
    other_user.is_staff = True
    other_user.save()
    client.force_login(other_user)
    for params in ({"match": "manual", "scope": "all"}, {"search": "Civitai model 77", "scope": "all"}):
        assert client.get("/api/v1/files/", params).json()["results"] == [], params
    assert [f["id"] for f in client.get("/api/v1/files/", {"scope": "all"}).json()["results"]] == [unknown_lora.pk]
