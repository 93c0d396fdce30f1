"""Preview images end to end: stored with versions, downloaded as thumbnails, shown per user's NSFW level."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from models_catalog.models import LocalFile, SourceImage, SourceVersion
from models_catalog.prompt_usage import prompt_usage
from models_catalog.services.identify import civitai_batch_and_rematch, local_file_identify
from models_catalog.services.previews import previews_retry_due, version_previews_download
from tests.model_builders import write_safetensors
from tests.factories import civitai_file, client_for, hashed  # noqa: F401
from tests.fakes.civitai import fake_civitai, generated_image  # noqa: F401

pytestmark = pytest.mark.django_db

IMAGES = [{"nsfw_level": 1, "format": "png"}, {"nsfw_level": 8, "format": "jpeg"},
          {"nsfw_level": 2, "format": "png", "meta": {"prompt": "x" * 10_000, "seed": 7}}, {"nsfw_level": 1}]


@pytest.fixture
def previews_on(settings, tmp_path):
    settings.PREVIEW_DIR = tmp_path / "previews"
    settings.PREVIEW_IMAGE_HOSTS = ["127.0.0.1"]
    settings.PREVIEWS_PER_VERSION = 3
    return settings.PREVIEW_DIR


def identified(civitai, model_root, user, *, name="cool.safetensors", images=IMAGES, capture=None) -> LocalFile:
    path = write_safetensors(model_root / name, payload=b"A" * 100)
    model_id = civitai.add_model(name="Cool", type="LORA")
    civitai.add_version(model_id, name="v1", trained_words=["coolstyle", "blue hair"],
                        files=[civitai_file(path.read_bytes(), name)], images=images)
    lf = hashed(path, user)
    local_file_identify(local_file_id=lf.pk)
    civitai_batch_and_rematch(client=client_for(civitai))
    return lf


def version_of(lf) -> SourceVersion:
    return lf.matches.get().source_file.version


def test_images_are_stored_with_the_version_and_meta_is_capped(civitai, model_root, user, previews_on):
    version = version_of(identified(civitai, model_root, user))
    rows = list(version.images.order_by("position"))
    assert [(r.nsfw_level, r.width, r.height) for r in rows] == [(1, 48, 64), (8, 48, 64), (2, 48, 64), (1, 48, 64)]
    assert rows[0].url.startswith(civitai.origin + "/images/") and rows[0].blurhash
    assert rows[2].meta["seed"] == 7 and len(rows[2].meta["prompt"]) <= 500
    assert all(r.state == "listed" for r in rows)


def test_identification_queues_the_download_of_the_first_few(civitai, model_root, user, previews_on, eager_celery,
                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        lf = identified(civitai, model_root, user)
    rows = list(version_of(lf).images.order_by("position"))
    assert [r.state for r in rows] == ["done", "done", "done", "listed"]  # PREVIEWS_PER_VERSION = 3
    for r in rows[:3]:
        data = (previews_on / r.thumb_name).read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"  # our re-encoding, not the PNG/JPEG served
    assert sorted(p.name for p in previews_on.iterdir()) == sorted(r.thumb_name for r in rows[:3])


def test_a_version_nobody_holds_downloads_nothing(civitai, previews_on, user):
    from models_catalog.services.catalog_store import civitai_version_store
    from workers.sources.civitai_data import parse_version

    mid = civitai.add_model(name="Nobody's", type="LORA")
    vid = civitai.add_version(mid, images=IMAGES[:1])
    row = civitai_version_store(version=parse_version(civitai.version_json(vid)))
    assert version_previews_download(version_id=row.pk) == {"done": 0, "failed": 0}
    assert civitai.count("GET", f"/images/{vid}/0.png") == 0


def test_a_failed_download_is_visible_and_tried_again_later(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user, images=IMAGES[:1])
    version = version_of(lf)
    civitai.fail_next(1, status=503)
    assert version_previews_download(version_id=version.pk) == {"done": 0, "failed": 1}
    row = version.images.get()
    assert row.state == "failed" and "HTTP 503" in row.error and row.attempts == 1
    client = Client()
    client.force_login(user)
    page = client.get(f"/files/{lf.pk}/").content.decode()
    assert "no image: image host answered HTTP 503 (tried again later)" in page
    assert previews_retry_due() == []  # not within the hour
    SourceImage.objects.filter(pk=row.pk).update(attempted_at=timezone.now() - timedelta(hours=2))
    assert previews_retry_due() == [version.pk]
    assert version_previews_download(version_id=version.pk, retry_failed=True) == {"done": 1, "failed": 0}
    row.refresh_from_db()
    assert row.state == "done" and row.error == "" and row.attempts == 2
    assert client.get(f"/previews/{row.pk}.webp").status_code == 200


def test_a_non_image_and_an_off_site_image_fail_with_their_reason(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user, images=IMAGES[:2])
    rows = list(version_of(lf).images.order_by("position"))
    civitai.serve_raw(rows[0].url.split(civitai.origin, 1)[1], headers={"Content-Type": "image/png"},
                      body=b"<!DOCTYPE html><html></html>")
    civitai.serve_raw(rows[1].url.split(civitai.origin, 1)[1], status=302,
                      headers={"Location": "https://evil.example/x.jpeg"})
    version_previews_download(version_id=rows[0].version_id)
    errors = [r.error for r in version_of(lf).images.order_by("position")]
    assert "does not match its content-type" in errors[0] and "host not allowed" in errors[1]
    assert not previews_on.exists() or not any(previews_on.iterdir())  # nothing unverified was stored


def test_nsfw_threshold_is_per_user_and_set_on_the_settings_page(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user)
    version_previews_download(version_id=version_of(lf).pk)
    staff = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    alice, carol = Client(), Client()
    alice.force_login(user)
    carol.force_login(staff)
    assert carol.post("/settings/", {"nsfw_max_level": "8"}).status_code == 302
    assert 'option value="8" selected' in carol.get("/settings/").content.decode()
    for client, blurred in ((alice, 2), (carol, 0)):  # alice keeps PG: the 8 and the 2 are blurred
        page = client.get(f"/files/{lf.pk}/").content.decode()
        assert page.count('class="preview nsfw-blur"') == blurred, page
    model_page = alice.get(f"/models/{version_of(lf).model_id}/").content.decode()
    assert model_page.count('class="preview nsfw-blur"') == 2 and model_page.count('.webp"') == 3
    # A blurred image shows its blurhash; the thumbnail's URL waits in data-full for the click.
    assert model_page.count('/blur.png" data-full="/previews/') == 2
    assert alice.post("/settings/", {"nsfw_max_level": "3"}).status_code == 302  # not a Civitai level
    assert 'option value="1" selected' in alice.get("/settings/").content.decode()


def test_copy_buttons_carry_the_a1111_and_comfyui_text(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user, name="my_style_v3.safetensors", images=[])
    client = Client()
    client.force_login(user)
    for url in (f"/files/{lf.pk}/", f"/models/{version_of(lf).model_id}/", "/"):
        page = client.get(url).content.decode()
        assert 'data-copy="&lt;lora:my_style_v3:1&gt;, coolstyle, blue hair" data-usage="a1111"' in page, url
        assert 'data-copy="coolstyle, blue hair" data-usage="comfy-words"' in page, url
        assert 'data-copy="my_style_v3.safetensors" data-usage="comfy-lora"' in page, url
    assert "no image" in client.get(f"/files/{lf.pk}/").content.decode()


def test_prompt_usage_text():
    usage = prompt_usage(file_name="detail.tweaker.safetensors", trained_words=[" w1 ", "", "w2"], model_type="LORA")
    assert (usage.a1111, usage.words, usage.comfy_lora_name) == (
        "<lora:detail.tweaker:1>, w1, w2", "w1, w2", "detail.tweaker.safetensors")
    checkpoint = prompt_usage(file_name="base.ckpt", trained_words=["x"], model_type="Checkpoint")
    assert (checkpoint.a1111, checkpoint.comfy_lora_name) == ("x", "")
    assert prompt_usage(file_name="l.safetensors", trained_words=[], model_type="LoCon").a1111 == "<lora:l:1>"


def test_a_local_preview_beside_the_file_is_used_and_only_its_owner_sees_it(model_root, user, other_user, previews_on):
    path = write_safetensors(model_root / "mine.safetensors", payload=b"M" * 64)
    (model_root / "mine.preview.png").write_bytes(generated_image(width=900, height=900))
    lf = hashed(path, user)
    alice, bob = Client(), Client()
    alice.force_login(user)
    bob.force_login(other_user)
    assert f"/files/{lf.pk}/preview.webp" in alice.get(f"/files/{lf.pk}/").content.decode()
    response = alice.get(f"/files/{lf.pk}/preview.webp")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    data = b"".join(response.streaming_content)
    assert data[8:12] == b"WEBP"
    assert bob.get(f"/files/{lf.pk}/preview.webp").status_code == 404
    assert Client().get(f"/files/{lf.pk}/preview.webp").status_code == 302  # sign in first


def test_a_local_preview_that_links_outside_the_roots_is_ignored(model_root, user, previews_on, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(generated_image())
    path = write_safetensors(model_root / "linked.safetensors", payload=b"L" * 64)
    (model_root / "linked.png").symlink_to(outside)
    lf = hashed(path, user)
    client = Client()
    client.force_login(user)
    assert client.get(f"/files/{lf.pk}/preview.webp").status_code == 404


def test_a_plain_name_png_beside_the_file_counts(model_root, user, previews_on):
    path = write_safetensors(model_root / "plain.safetensors", payload=b"P" * 64)
    (model_root / "plain.jpg").write_bytes(generated_image(fmt="jpeg"))
    lf = hashed(path, user)
    client = Client()
    client.force_login(user)
    assert client.get(f"/files/{lf.pk}/preview.webp").status_code == 200


def test_preview_view_needs_a_sign_in_and_a_downloaded_thumbnail(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user, images=IMAGES[:1])
    row = version_of(lf).images.get()
    client = Client()
    client.force_login(user)
    assert client.get(f"/previews/{row.pk}.webp").status_code == 404  # listed, not downloaded
    version_previews_download(version_id=row.version_id)
    assert Client().get(f"/previews/{row.pk}.webp").status_code == 302
    response = client.get(f"/previews/{row.pk}.webp")
    assert response.status_code == 200 and "private" in response["Cache-Control"]


def test_the_blurhash_placeholder_is_a_tiny_png_and_a_bad_hash_is_a_404(civitai, model_root, user, previews_on):
    lf = identified(civitai, model_root, user, images=IMAGES[:1])
    row = version_of(lf).images.get()
    client = Client()
    client.force_login(user)
    response = client.get(f"/previews/{row.pk}/blur.png")
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(response.content)).size == (32, 32)
    SourceImage.objects.filter(pk=row.pk).update(blurhash="not-a-hash")
    assert client.get(f"/previews/{row.pk}/blur.png").status_code == 404
    assert Client().get(f"/previews/{row.pk}/blur.png").status_code == 302


def test_the_hourly_refresh_sends_lost_downloads_and_gives_up_after_max_attempts(civitai, model_root, user,
                                                                                 previews_on, monkeypatch):
    from models_catalog.services import previews as previews_service
    from workers import tasks

    lf = identified(civitai, model_root, user, images=IMAGES[:1])  # on_commit never ran: as if the broker was down
    version = version_of(lf)
    assert previews_retry_due() == [version.pk]
    sent = []
    monkeypatch.setattr(tasks.download_previews, "delay", lambda vid, retry: sent.append((vid, retry)))
    monkeypatch.setattr(previews_service.transaction, "on_commit", lambda fn: fn())
    from models_catalog.services import civitai_lookup
    monkeypatch.setattr(civitai_lookup, "civitai_models_complete", lambda: None)
    tasks.civitai_refresh_stale()
    assert sent == [(version.pk, True)]
    SourceImage.objects.filter(version=version).update(state="failed", attempts=previews_service.MAX_ATTEMPTS,
                                                       attempted_at=timezone.now() - timedelta(days=1))
    assert previews_retry_due() == []


def test_the_api_file_detail_lists_the_versions_previews_blurred_by_the_viewers_level(user):
    from rest_framework.test import APIClient

    from models_catalog.models import FileHashes, LocalFile, Match, SourceFile, SourceImage, SourceModel, SourceVersion

    model = SourceModel.objects.create(source="civitai", external_id="77", name="Pics")
    version = SourceVersion.objects.create(model=model, external_id="770", name="v1")
    sf = SourceFile.objects.create(version=version, external_id="7700", name="p.safetensors", sha256="a" * 64)
    lf = LocalFile.objects.create(owner=user, origin="registered", path="/m/p.safetensors", name="p.safetensors",
                                  status="done", size=1)
    FileHashes.objects.create(local_file=lf, size=1, sha256="a" * 64)
    Match.objects.create(local_file=lf, source_file=sf, kind="exact", evidence="SHA256 equal")
    SourceImage.objects.create(version=version, position=0, url="https://image.civitai.com/0.png", nsfw_level=1,
                               state="done", thumb_name="t0.webp")
    SourceImage.objects.create(version=version, position=1, url="https://image.civitai.com/1.png", nsfw_level=8)
    api = APIClient()
    api.force_authenticate(user)
    previews = api.get(f"/api/v1/files/{lf.pk}/").json()["previews"]
    assert [(p["nsfw_level"], p["blurred"], p["state"]) for p in previews] == [(1, False, "done"), (8, True, "listed")]
    assert previews[0]["url"].endswith(".webp") and previews[1]["url"] == ""
