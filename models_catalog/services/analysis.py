"""The analysis stage, after hashing: format by content, pickle safety, tensor fingerprint.

Nothing here executes a file: the scanner reads opcodes, the readers map a
small allowlist to inert stand-ins. A dangerous or unreadable file is never
read further (no fingerprint). Whatever happens, the row leaves the
"analysing" state with a stored, explained result, then goes to identify.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from django.utils import timezone

from models_catalog.models import FolderMember, LocalFile
from workers.modelfiles.types import Finding, ModelFileError, SafetyReport

log = logging.getLogger(__name__)

VERDICT_ORDER = ("safe", "suspicious", "unreadable", "dangerous")
# Formats the fingerprint can read (pickle-based ones only after a safe/suspicious scan).
FINGERPRINTABLE = {"safetensors", "diffusers", "torch-zip", "torch-legacy", "torch-tar", "pickle", "npy", "npz"}


def _scan(path: Path) -> SafetyReport:
    from workers.modelfiles.pickle_scan import scan_path

    try:
        return scan_path(path)
    except ModelFileError as exc:
        return SafetyReport(verdict="unreadable", findings=(Finding("unreadable", "file", str(path.name), str(exc)),))


def _scan_folder(lf: LocalFile, root: Path) -> SafetyReport:
    """Every weight file of a diffusers folder; the folder is as bad as its worst file."""
    findings: list[Finding] = []
    globals_seen: set[str] = set()
    worst = "safe"
    for rel in FolderMember.objects.filter(folder=lf).values_list("relative_path", flat=True):
        report = _scan(root / rel)
        worst = max(worst, report.verdict, key=VERDICT_ORDER.index)
        globals_seen.update(report.globals_seen)
        findings += [Finding(f.severity, f.what, f"{rel}:{f.where}", f.why) for f in report.findings]
    # Code beside the weights is never imported, but a user should know it is there.
    for py in sorted(root.rglob("*.py")):
        findings.append(Finding("suspicious", "python file", str(py.relative_to(root)),
                                "a diffusers folder with custom code: ModelXRef never imports it; loaders with "
                                "trust_remote_code would run it"))
        worst = max(worst, "suspicious", key=VERDICT_ORDER.index)
    return SafetyReport(verdict=worst, findings=tuple(findings), globals_seen=tuple(sorted(globals_seen)))


def analyse_path(path: Path, *, local_file: LocalFile | None = None) -> dict:
    """Format, safety and fingerprint of one path, as stored on LocalFile. Pure of DB writes."""
    from workers.modelfiles.fingerprint import fingerprint_path
    from workers.modelfiles.sniff import sniff

    result: dict = {"format": "unknown", "analysis_error": "", "fingerprint": None}
    try:
        result["format"] = sniff(path)
    except ModelFileError as exc:
        result["analysis_error"] = f"cannot read the file: {exc}"
    if path.is_dir():
        report = _scan_folder(local_file, path) if local_file else SafetyReport(verdict="safe")
    else:
        report = _scan(path)
    result["safety_verdict"] = report.verdict
    result["safety_findings"] = [asdict(f) for f in report.findings]
    if report.verdict in ("dangerous", "unreadable"):
        result["analysis_error"] = result["analysis_error"] or f"not read further: the safety verdict is {report.verdict}"
        return result
    if result["format"] not in FINGERPRINTABLE:
        result["analysis_error"] = result["analysis_error"] or f"no tensor fingerprint for format {result['format']}"
        return result
    try:
        result["fingerprint"] = fingerprint_path(path).to_dict()
    except ModelFileError as exc:
        result["analysis_error"] = f"tensors could not be read: {exc}"
    return result


def local_file_analyse(*, local_file_id: int) -> None:
    lf = LocalFile.objects.filter(pk=local_file_id).first()
    if lf is None or lf.status != LocalFile.Status.ANALYSING:
        return
    try:
        result = analyse_path(Path(lf.path), local_file=lf)
    except Exception as exc:  # a reader bug must not leave the row "analysing" forever
        log.exception("analysis of local file %s failed", lf.pk)
        result = {"format": lf.format or "unknown", "safety_verdict": "unreadable", "fingerprint": None,
                  "safety_findings": [asdict(Finding("unreadable", "analysis", "", f"internal error: {exc}"))],
                  "analysis_error": f"internal error while reading the file ({type(exc).__name__}): {exc}"}
    fingerprint = result["fingerprint"]
    updated = LocalFile.objects.filter(pk=lf.pk, status=LocalFile.Status.ANALYSING).update(
        status=LocalFile.Status.DONE, heartbeat_at=timezone.now(),
        format=result["format"], safety_verdict=result["safety_verdict"], safety_findings=result["safety_findings"],
        fingerprint=fingerprint, analysis_error=result["analysis_error"],
        content_id=(fingerprint or {}).get("content_id", "") or "", precision_id=(fingerprint or {}).get("precision_id", "") or "",
    )
    if updated:
        from models_catalog.services.identify import enqueue_identify

        enqueue_identify(lf.pk)
