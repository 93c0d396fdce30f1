"""Image download and thumbnailing refuse what is not a safe, small, real image (against the stand-in over HTTP)."""
import io
import struct
import zlib

import pytest
from PIL import Image

from tests.fakes.civitai import fake_civitai, generated_image  # noqa: F401
from workers.sources.images import ImageRefused, image_fetch, thumbnail_make

HOSTS = ["127.0.0.1"]


def fetch(url, **kw):
    return image_fetch(url, allowed_hosts=kw.pop("hosts", HOSTS), max_bytes=kw.pop("max_bytes", 100_000), **kw)


def test_a_png_and_a_jpeg_are_fetched_and_re_encoded_as_bounded_webp(fake_civitai):
    for fmt in ("png", "jpeg"):
        url = fake_civitai.serve_raw(f"/img.{fmt}", headers={"Content-Type": f"image/{fmt}"},
                                     body=generated_image(fmt=fmt, width=1200, height=600))
        data = fetch(url)
        thumb = thumbnail_make(data, max_px=512)
        assert thumb.data[:4] == b"RIFF" and thumb.data[8:12] == b"WEBP"
        assert thumb.data != data
        assert (thumb.width, thumb.height) == (512, 256)


def test_html_sent_as_an_image_is_refused(fake_civitai):
    url = fake_civitai.serve_raw("/evil.png", headers={"Content-Type": "image/png"}, body=b"<html><script>x</script>")
    with pytest.raises(ImageRefused, match="does not match its content-type"):
        fetch(url)


def test_a_png_sent_as_html_is_refused(fake_civitai):
    url = fake_civitai.serve_raw("/page", headers={"Content-Type": "text/html"}, body=generated_image())
    with pytest.raises(ImageRefused, match="not an image"):
        fetch(url)


def test_oversize_is_refused_whatever_content_length_says(fake_civitai):
    big = generated_image(width=400, height=400) + b"\0" * 200_000
    url = fake_civitai.serve_raw("/big.png", headers={"Content-Type": "image/png"}, body=big)
    with pytest.raises(ImageRefused, match="too large"):
        fetch(url, max_bytes=50_000)


def test_a_redirect_off_the_allowed_hosts_is_refused(fake_civitai):
    url = fake_civitai.serve_raw("/r.png", status=302, headers={"Location": "http://169.254.169.254/latest.png"})
    with pytest.raises(ImageRefused, match="host not allowed"):
        fetch(url)


def test_a_redirect_on_the_allowed_host_is_followed(fake_civitai):
    fake_civitai.serve_raw("/real.png", headers={"Content-Type": "image/png"}, body=generated_image())
    url = fake_civitai.serve_raw("/moved.png", status=302, headers={"Location": "/real.png"})
    assert fetch(url)[:4] == b"\x89PNG"


def test_a_host_not_allowed_is_never_asked(fake_civitai):
    url = fake_civitai.serve_raw("/x.png", headers={"Content-Type": "image/png"}, body=generated_image())
    with pytest.raises(ImageRefused, match="host not allowed"):
        fetch(url, hosts=["image.civitai.com"])
    assert fake_civitai.count() == 0


def test_a_server_error_is_retryable(fake_civitai):
    url = fake_civitai.serve_raw("/down.png", status=503, headers={"Content-Type": "text/plain"}, body=b"busy")
    with pytest.raises(ImageRefused) as exc:
        fetch(url)
    assert exc.value.retryable


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header says width x height (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageRefused, match="too large to decode"):
        thumbnail_make(_png_claiming(60_000, 60_000))
    assert Image.MAX_IMAGE_PIXELS != 1  # the process-wide guard is put back


def test_garbage_with_png_magic_is_refused():
    with pytest.raises(ImageRefused, match="could not be decoded"):
        thumbnail_make(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)


def test_transparency_survives_as_webp():
    img = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert thumbnail_make(buf.getvalue()).data[:4] == b"RIFF"
