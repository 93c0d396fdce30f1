"""Newer versions: which of a user's identified files belong to a Civitai model that has published a
version newer than every version that user holds. One rule, for the Updates filter, the badges and
`manage.py updates`.

Read-only; the newest version of each model is stored by the hourly refresh
(civitai_lookup.civitai_models_check_updates). All of it is SQL (semi-joins), so a page that uses it
keeps its fixed number of queries.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Exists, F, OuterRef, Q, QuerySet

from models_catalog.identity import IDENTIFYING_KINDS
from models_catalog.models import Match, Source, SourceVersion


def holds_newest() -> Exists:
    """For a Match row: its file's owner holds a file identified as the newest version of the model
    (or a later one). Another user's copy of v2 does not make this user's v1 current. On Match's copied
    owner and model: a range of the (owner, model) index, no join through the owner's files."""
    return Exists(Match.objects.filter(
        owner=OuterRef("owner"), kind__in=IDENTIFYING_KINDS, model=OuterRef("model"),
        source_file__version__published_at__gte=OuterRef("source_file__version__model__newest_version__published_at"),
    ))


def update_matches() -> QuerySet[Match]:
    """Identifying matches whose Civitai model has a newer version than any its file's owner holds."""
    return Match.objects.filter(
        kind__in=IDENTIFYING_KINDS, source_file__version__model__source=Source.CIVITAI,
        source_file__version__model__newest_version__published_at__gt=F("source_file__version__published_at"),
    ).filter(~holds_newest())


def update_q() -> Q:
    """LocalFile rows with a newer version available (the My files "Updates" filter)."""
    return Q(pk__in=update_matches().values("local_file_id"))


@dataclass(frozen=True)
class VersionUpdate:
    """What is newer than the held version: name, when published, early access, where to get it."""

    name: str
    published_at: datetime | None
    url: str
    early_access: bool
    early_access_ends_at: datetime | None

    @property
    def label(self) -> str:
        return f"{self.name or 'a newer version'} available" + (" (early access)" if self.early_access else "")

    def to_json(self) -> dict:
        return {"name": self.name, "published_at": self.published_at.isoformat() if self.published_at else None,
                "url": self.url, "early_access": self.early_access,
                "early_access_ends_at": self.early_access_ends_at.isoformat() if self.early_access_ends_at else None}


def version_update(newest: SourceVersion | None) -> VersionUpdate | None:
    if newest is None:
        return None
    return VersionUpdate(name=newest.name, published_at=newest.published_at, url=newest.url,
                         early_access=newest.in_early_access, early_access_ends_at=newest.early_access_ends_at)


def update_for_match(match: Match) -> VersionUpdate | None:
    """The update a Match row loaded with `select_related(...newest_version)` and annotated with
    `holds_newest` leads to, or None."""
    version = match.source_file.version
    newest = version.model.newest_version
    if (match.kind not in IDENTIFYING_KINDS or version.model.source != Source.CIVITAI or newest is None
            or getattr(match, "holds_newest", True) or newest.published_at is None or version.published_at is None
            or newest.published_at <= version.published_at):
        return None
    return version_update(newest)


@dataclass(frozen=True)
class UpdateRow:
    model_id: int
    model_name: str
    model_url: str
    have: tuple[str, ...]  # the version names the user holds
    new: VersionUpdate

    def to_json(self) -> dict:
        return {"model_id": self.model_id, "model": self.model_name, "model_url": self.model_url,
                "have": list(self.have), "new": self.new.to_json()}


def updates_for_user(user) -> list[UpdateRow]:
    """Each model of `user`'s files with a newer version, once, with the versions they hold."""
    matches = (update_matches().filter(local_file__owner=user)
               .select_related("source_file__version__model__newest_version").order_by("pk"))
    by_model: dict[int, tuple] = {}
    for m in matches:
        model = m.source_file.version.model
        _, have = by_model.setdefault(model.pk, (model, set()))
        have.add(m.source_file.version.name or m.source_file.version.external_id)
    rows = [UpdateRow(model_id=model.pk, model_name=model.name, model_url=model.url,
                      have=tuple(sorted(have)), new=version_update(model.newest_version))
            for model, have in by_model.values()]
    return sorted(rows, key=lambda r: r.model_name.lower())


def model_update(model, held: list[SourceVersion]) -> VersionUpdate | None:
    """The model page's badge: `held` are the versions the viewer's own files are identified as."""
    newest = model.newest_version if model.source == Source.CIVITAI else None
    if newest is None or newest.published_at is None or not held:
        return None
    if any(v.published_at is None or v.published_at >= newest.published_at for v in held):
        return None
    return version_update(newest)
