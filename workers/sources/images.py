"""Preview images: fetch one from an allowed host and re-encode it into a bounded thumbnail.

PURE: no Django. Downloaded images are hostile: a URL in Civitai's answer may redirect anywhere,
a server may send HTML with an image content-type, a small file may decode to gigapixels. So:
redirects are followed by hand and only to allowed hosts; the body is read in chunks up to a cap;
content-type AND magic bytes must say the same image kind; Pillow decodes under a pixel cap and
what is kept is our own re-encoding (WebP), never the bytes that came in.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from workers.sources.http import make_session

MAX_REDIRECTS = 3
# Decoding cost is pixels, not bytes: a 40 kB PNG can say 50,000 x 50,000. Civitai's largest
# originals are ~ 4096 x 4096 (16.8 M); 40 M pixels leaves room and caps memory near 160 MB (RGBA).
MAX_PIXELS = 40_000_000
# Content-types we accept, with the magic bytes each must start with.
IMAGE_KINDS = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),  # plus b"WEBP" at offset 8, checked below
    "image/gif": (b"GIF87a", b"GIF89a"),
}
PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


class ImageRefused(Exception):
    """Why an image was not kept, in words; `retryable` when trying again later may work."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Thumbnail:
    data: bytes  # WebP
    width: int
    height: int


def _host_allowed(url: str, allowed_hosts: frozenset[str]) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    return parts.hostname.lower() in allowed_hosts


def image_kind(head: bytes) -> str | None:
    """The image content-type the first bytes prove, or None."""
    for kind, magics in IMAGE_KINDS.items():
        if any(head.startswith(m) for m in magics):
            if kind == "image/webp" and head[8:12] != b"WEBP":
                continue
            return kind
    return None


def image_fetch(url: str, *, allowed_hosts: list[str] | frozenset[str], max_bytes: int, timeout: float = 20.0,
                session: requests.Session | None = None) -> bytes:
    """The bytes at `url`, checked: allowed host at every hop, image content-type, size cap, magic bytes."""
    allowed = frozenset(h.lower() for h in allowed_hosts)
    session = session or make_session()
    for _hop in range(MAX_REDIRECTS + 1):
        if not _host_allowed(url, allowed):
            raise ImageRefused(f"host not allowed for images: {urlsplit(url).hostname or url[:80]}")
        try:
            response = session.get(url, timeout=timeout, stream=True, allow_redirects=False,
                                    headers={"Accept": "image/webp,image/png,image/jpeg,image/*;q=0.8"})
        except requests.RequestException as exc:
            raise ImageRefused(f"download failed: {type(exc).__name__}", retryable=True) from exc
        with response:
            if response.is_redirect:
                url = urljoin(url, response.headers.get("Location", ""))
                continue
            if response.status_code in (429,) or response.status_code >= 500:
                raise ImageRefused(f"image host answered HTTP {response.status_code}", retryable=True)
            if response.status_code != 200:
                raise ImageRefused(f"image host answered HTTP {response.status_code}")
            ctype = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype not in IMAGE_KINDS:
                raise ImageRefused(f"not an image (content-type {ctype or 'missing'})")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageRefused(f"image too large: {int(declared):,} bytes (limit {max_bytes:,})")
            body = bytearray()
            try:
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:  # Content-Length may lie or be absent
                        raise ImageRefused(f"image too large: over {max_bytes:,} bytes")
            except requests.RequestException as exc:
                raise ImageRefused(f"download failed: {type(exc).__name__}", retryable=True) from exc
            proved = image_kind(bytes(body[:16]))
            if proved != ctype:
                raise ImageRefused(f"content does not match its content-type {ctype} "
                                   f"({'looks like ' + proved if proved else 'not an image'})")
            return bytes(body)
    raise ImageRefused(f"more than {MAX_REDIRECTS} redirects")


def thumbnail_make(data: bytes, *, max_px: int = 512, max_pixels: int = MAX_PIXELS) -> Thumbnail:
    """Decode `data` (any accepted kind) under a pixel cap and re-encode it as a WebP at most max_px a side."""
    from PIL import Image

    kind = image_kind(data[:16])
    if kind is None:
        raise ImageRefused("not an image (magic bytes)")
    # Pillow's own guard is process-wide and only warns below 2x its limit; we set ours per call
    # and turn the warning into a refusal as well.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[kind]]) as img:
                if img.width * img.height > max_pixels:
                    raise ImageRefused(f"image too large to decode: {img.width} x {img.height} pixels")
                img.draft("RGB", (max_px, max_px))  # JPEG: decode at a reduced scale, less memory
                img.seek(0)  # the first frame of an animation
                img.thumbnail((max_px, max_px))
                out = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P", "PA") else "RGB")
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data; all mean the same here
        raise ImageRefused(f"image could not be decoded: {type(exc).__name__}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old
    buf = io.BytesIO()
    out.save(buf, format="WEBP", quality=80, method=4)
    return Thumbnail(data=buf.getvalue(), width=out.width, height=out.height)


def blurhash_png(value: str, *, size: int = 32) -> bytes:
    """Civitai's blurhash as a tiny PNG: what a blurred preview shows, so the image itself is fetched
    by the browser only once the viewer clicks it. Refuses a malformed hash."""
    import blurhash
    from PIL import Image

    if not value or len(value) > 100:
        raise ImageRefused("no usable blurhash")
    try:
        rows = blurhash.decode(value, size, size)
    except (ValueError, IndexError) as exc:
        raise ImageRefused(f"malformed blurhash: {exc}") from exc
    img = Image.new("RGB", (size, size))
    img.putdata([tuple(int(max(0, min(255, c))) for c in px[:3]) for row in rows for px in row])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
