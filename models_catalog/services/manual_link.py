"""A user links one of their own files to a Civitai version or a Hugging Face file by hand.

The link is the owner's statement, not evidence from the bytes: a Match of kind `manual`, the
weakest kind, never one of the exact kinds (so no duplicate check, propagation through shared
weights or "verified" flag ever trusts it), kept when the file is matched again, and shown only
where the owner's own files are shown. One manual link per file; linking again replaces it.

Civitai is asked for the version's details (so the catalog has the version and its files); when
it cannot be reached the link is stored with the URL alone and the outcome says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import transaction

from models_catalog.identity import best_model_names_sync
from models_catalog.models import LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services.catalog_store import CIVITAI_SITE, _hf_version_row, civitai_version_store

CIVITAI_HOSTS = {"civitai.com", "www.civitai.com", "civitai.red", "www.civitai.red"}
HF_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
URL_ONLY_FILE = "(linked by URL)"


class LinkRefused(ValueError):
    """The URL is not one we can link to (its message says why, for the user)."""


@dataclass(frozen=True)
class ParsedLink:
    source: str  # civitai | huggingface
    url: str
    model_id: int | None = None
    version_id: int | None = None
    repo_id: str = ""
    revision: str = ""
    path: str = ""


@dataclass(frozen=True)
class LinkOutcome:
    match: Match
    message: str
    url_only: bool  # Civitai could not be asked: only the URL is known


def parse_link_url(url: str) -> ParsedLink:
    text = (url or "").strip()
    if len(text) > 1000:
        raise LinkRefused("that URL is too long")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise LinkRefused("give a Civitai or Hugging Face URL starting with https://")
    host = (parts.hostname or "").lower()
    segments = [s for s in parts.path.split("/") if s]
    if host in CIVITAI_HOSTS:
        if len(segments) < 2 or segments[0] != "models" or not segments[1].isdigit():
            raise LinkRefused("a Civitai link looks like https://civitai.com/models/123?modelVersionId=456")
        version = parse_qs(parts.query).get("modelVersionId", [""])[0]
        if version and not version.isdigit():
            raise LinkRefused("modelVersionId must be a number")
        return ParsedLink(source=Source.CIVITAI, url=text, model_id=int(segments[1]),
                          version_id=int(version) if version else None)
    if host in HF_HOSTS:
        if (len(segments) < 5 or segments[2] not in ("blob", "resolve")
                or not all(_REPO_PART.match(s) for s in segments[:2])):
            raise LinkRefused("a Hugging Face link looks like https://huggingface.co/org/repo/blob/main/file.safetensors")
        return ParsedLink(source=Source.HUGGINGFACE, url=text, repo_id=f"{segments[0]}/{segments[1]}",
                          revision=segments[3][:255], path="/".join(segments[4:])[:500])
    raise LinkRefused("only civitai.com, civitai.red and huggingface.co links can be used")


def local_file_link(*, local_file: LocalFile, url: str, client=None) -> LinkOutcome:
    """Link `local_file` (already checked to be the requester's) to `url`. Raises LinkRefused."""
    link = parse_link_url(url)
    if link.source == Source.HUGGINGFACE:
        source_file, message, url_only = _hf_file(link), f"linked to {link.repo_id}/{link.path} on Hugging Face", False
    else:
        source_file, message, url_only = _civitai_file(link, client=client)
    with transaction.atomic():
        Match.objects.filter(local_file=local_file, kind=Match.Kind.MANUAL).delete()
        match = Match.objects.create(local_file=local_file, source_file=source_file, kind=Match.Kind.MANUAL,
                                     evidence=f"linked by you: {link.url}"[:2000])
        best_model_names_sync(local_file_ids=[local_file.pk])
    return LinkOutcome(match=match, message=message, url_only=url_only)


def local_file_unlink(*, local_file: LocalFile) -> int:
    with transaction.atomic():
        removed, _ = Match.objects.filter(local_file=local_file, kind=Match.Kind.MANUAL).delete()
        best_model_names_sync(local_file_ids=[local_file.pk])
    return removed


def _hf_file(link: ParsedLink) -> SourceFile:
    # Not asked of the Hub: a hand link says what the owner believes, and the HF index checks hashes.
    version, repo_url = _hf_version_row(repo_id=link.repo_id, repo_type="model", revision=link.revision)
    sf, _ = SourceFile.objects.get_or_create(
        version=version, external_id=link.path,
        defaults={"name": link.path.rsplit("/", 1)[-1][:500],
                  "download_url": f"{repo_url}/resolve/{link.revision}/{link.path}"[:1000]})
    return sf


def _civitai_file(link: ParsedLink, *, client) -> tuple[SourceFile, str, bool]:
    from models_catalog.services.civitai_lookup import civitai_client
    from workers.sources.civitai_data import CivitaiError, CivitaiUnavailable

    if client is None and not settings.CIVITAI_ENABLED:
        return _url_only(link), "Civitai is switched off here (CIVITAI_ENABLED): the link is stored with its URL only", True
    client = client or civitai_client()
    try:
        if link.version_id is not None:
            version = client.version(link.version_id)
            if version is None:
                raise LinkRefused(f"Civitai has no version {link.version_id}")
            if version.model_id != link.model_id:
                raise LinkRefused(f"Civitai version {link.version_id} belongs to model {version.model_id}, "
                                  f"not {link.model_id}")
            model = None
        else:
            model = client.model(link.model_id)
            if model is None or not model.versions:
                raise LinkRefused(f"Civitai has no model {link.model_id} with a published version")
            version = model.versions[0]  # the newest: what the model page opens on
    except CivitaiUnavailable as exc:
        return _url_only(link), f"Civitai could not be reached ({exc}); the link is stored with its URL only", True
    except CivitaiError as exc:
        raise LinkRefused(f"Civitai refused the request: {exc}") from exc
    with transaction.atomic():
        row = civitai_version_store(version=version, model=model)
        files = list(row.files.all())
        primary = next((f for f in files if f.primary), files[0] if files else None)
        if primary is None:
            primary = SourceFile.objects.create(version=row, external_id="manual-link", name=URL_ONLY_FILE)
    return primary, f"linked to {row.model.name} {row.name}".strip(), False


def _url_only(link: ParsedLink) -> SourceFile:
    """Rows that carry the URL and nothing else (no hashes, so nothing can ever match them); the
    next successful Civitai answer for this version fills in the names."""
    model, _ = SourceModel.objects.get_or_create(
        source=Source.CIVITAI, external_id=str(link.model_id),
        defaults={"name": f"Civitai model {link.model_id}", "url": f"{CIVITAI_SITE}/models/{link.model_id}"})
    vid = str(link.version_id) if link.version_id is not None else ""
    version, _ = SourceVersion.objects.get_or_create(
        model=model, external_id=vid or "unknown",
        defaults={"url": link.url[:500], "name": f"version {vid}" if vid else ""})
    sf, _ = SourceFile.objects.get_or_create(version=version, external_id="manual-link",
                                             defaults={"name": URL_ONLY_FILE})
    return sf
