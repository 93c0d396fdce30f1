"""What a set of local files turned out to be: the table and totals `register --wait` ends with.

Read-only: identities come from `identity.file_identities`, duplicate groups
from `services.duplicates`, so the CLI says what the pages say.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.template.defaultfilters import filesizeformat

from models_catalog.identity import FileIdentity, IdentityState, file_identities
from models_catalog.models import LocalFile
from models_catalog.services.duplicates import duplicate_groups


@dataclass(frozen=True)
class ReportRow:
    file: LocalFile
    identity: FileIdentity

    @property
    def what(self) -> str:
        if self.identity.what:
            return self.identity.what
        if self.identity.state == IdentityState.UNKNOWN and self.identity.described_as:
            return f"unknown {self.identity.described_as}"  # what the file says about itself
        return {"broken": "unreadable", "working": "(still being read)", "waiting": "(asking Civitai)"}.get(
            self.identity.state, "unknown")

    @property
    def kind(self) -> str:
        """Type and base model: 'LORA, SDXL 1.0'."""
        return ", ".join(x for x in (self.identity.model_type, self.identity.base_model) if x)

    @property
    def safety(self) -> str:
        return self.file.safety_verdict or ("error" if self.file.status == LocalFile.Status.ERROR else "-")


@dataclass
class LibraryReport:
    rows: list[ReportRow]
    totals: Counter = field(default_factory=Counter)
    duplicate_groups: int = 0
    reclaimable_bytes: int = 0  # without losing anything: exact copies, same weights, conversions

    TOTAL_ORDER = ("identified", "related", "unknown", "dangerous", "suspicious", "unreadable", "waiting", "working")

    def totals_line(self) -> str:
        parts = [f"{self.totals[k]} {k}" for k in self.TOTAL_ORDER if self.totals[k]]
        parts.append(f"{self.duplicate_groups} duplicate group{'s' if self.duplicate_groups != 1 else ''}"
                     + (f" ({filesizeformat(self.reclaimable_bytes)} reclaimable without loss)" if self.reclaimable_bytes else ""))
        return f"{len(self.rows)} files: " + ", ".join(parts)


def library_report(*, local_file_ids: list[int], viewer) -> LibraryReport:
    files = list(LocalFile.objects.filter(pk__in=local_file_ids).order_by("path"))
    identities = file_identities(files, viewer=viewer)
    report = LibraryReport(rows=[ReportRow(f, identities[f.pk]) for f in files])
    for row in report.rows:
        state = row.identity.state
        report.totals["unreadable" if state == IdentityState.BROKEN else state] += 1
        if row.file.safety_verdict in ("dangerous", "suspicious"):
            report.totals[row.file.safety_verdict] += 1
        elif row.file.safety_verdict == "unreadable" and state != IdentityState.BROKEN:
            report.totals["unreadable"] += 1
    wanted = set(local_file_ids)
    for owner_id in {f.owner_id for f in files}:
        for group in duplicate_groups(owner=owner_id):
            if wanted & {m.id for m in group.members}:
                report.duplicate_groups += 1
                report.reclaimable_bytes += group.lossless_bytes
    return report
