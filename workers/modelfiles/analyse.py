"""One call for everything the readers know about a path (PURE): format, safety, fingerprint.

Order matters: the pickle scanner runs first, and a dangerous or unreadable
file is never handed to a tensor reader.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.modelfiles.types import Finding, ModelFileError, SafetyReport, TruncatedFileError, UnsupportedModelFile

VERDICT_ORDER = ("safe", "suspicious", "unreadable", "dangerous")
FINGERPRINTABLE = frozenset({"safetensors", "diffusers", "torch-zip", "torch-legacy", "torch-tar", "pickle", "npy", "npz"})


@dataclass
class Analysis:
    format: str = "unknown"
    verdict: str = "unreadable"
    findings: list[dict] = field(default_factory=list)
    globals_seen: list[str] = field(default_factory=list)
    fingerprint: dict | None = None
    error: str = ""
    self_description: dict | None = None  # see workers/modelfiles/self_description.py
    architecture: dict | None = None  # family and kind with evidence: workers/modelfiles/architecture.py

    def to_json(self) -> dict:
        return asdict(self)


def worst(a: str, b: str) -> str:
    return max(a, b, key=VERDICT_ORDER.index)


def scan(path: Path) -> SafetyReport:
    from workers.modelfiles.pickle_scan import scan_path

    try:
        return scan_path(path)
    except ModelFileError as exc:
        return SafetyReport(verdict="unreadable", findings=(Finding("unreadable", "file", path.name, str(exc)),))


def scan_folder(root: Path, member_paths: list[str]) -> SafetyReport:
    """Every weight file of a folder; the folder is as bad as its worst file."""
    findings: list[Finding] = []
    seen: set[str] = set()
    verdict = "safe"
    for rel in member_paths:
        report = scan(root / rel)
        verdict = worst(verdict, report.verdict)
        seen.update(report.globals_seen)
        findings += [Finding(f.severity, f.what, f"{rel}:{f.where}", f.why) for f in report.findings]
    # Code beside the weights is never imported here, but a user should know it is there.
    for py in sorted(root.rglob("*.py")):
        findings.append(Finding("suspicious", "python file", py.relative_to(root).as_posix(),
                                "custom code in a model folder: ModelXRef never imports it, but loaders with "
                                "trust_remote_code=True would run it"))
        verdict = worst(verdict, "suspicious")
    return SafetyReport(verdict=verdict, findings=tuple(findings), globals_seen=tuple(sorted(seen)))


def analyse_path(path: Path, *, member_paths: list[str] | None = None, progress=None) -> Analysis:
    """`member_paths`: a folder's weight files (relative), as the hash engine listed them.
    `progress(done, total)`: called as tensor bytes are read (see fingerprint_path)."""
    from workers.modelfiles.fingerprint import fingerprint_path
    from workers.modelfiles.self_description import TensorEvidence
    from workers.modelfiles.sniff import sniff

    result = Analysis()
    evidence = TensorEvidence()
    try:
        result.format = sniff(path)
    except ModelFileError as exc:
        result.error = f"cannot read the file: {exc}"
    report = scan_folder(path, member_paths or []) if path.is_dir() else scan(path)
    result.verdict = report.verdict
    result.findings = [asdict(f) for f in report.findings]
    result.globals_seen = list(report.globals_seen)
    if report.verdict == "unreadable":
        # The reason, in the scanner's words ("truncated zip: ..."), not just the verdict.
        why = next((f.why for f in report.findings if f.severity == "unreadable" and f.why), "")
        result.error = result.error or why or "not read further: the safety verdict is unreadable"
    elif report.verdict == "dangerous":
        result.error = result.error or f"not read further: the safety verdict is {report.verdict}"
    elif result.format not in FINGERPRINTABLE:
        result.error = result.error or f"no tensor fingerprint for format {result.format}"
    else:
        try:
            # safetensors names come from the header (below); other formats are seen as they stream past.
            observe = None if result.format == "safetensors" else evidence.observe
            result.fingerprint = fingerprint_path(path, progress=progress, observe=observe).to_dict()
        except UnsupportedModelFile as exc:
            result.error = f"no tensor fingerprint: {exc}"
        except ModelFileError as exc:
            result.error = str(exc) if isinstance(exc, TruncatedFileError) else f"tensors could not be read: {exc}"
            # The format was recognised but its data cannot be read (cut off, bad offsets, overlapping
            # tensors, storages the file does not hold): damaged, whatever the container or its pickles say.
            result.verdict = worst(result.verdict, "unreadable")
            result.findings.append(asdict(Finding("unreadable", "tensor data", path.name, str(exc))))
    result.self_description, result.architecture = describe_and_detect(path, fmt=result.format, evidence=evidence)
    if result.fingerprint and result.architecture:
        _rename_components(result.fingerprint, result.architecture)
    return result


def _rename_components(fingerprint: dict, architecture: dict) -> None:
    """Put components the key names misplace where the shapes say (architecture.component_renames)."""
    from workers.modelfiles.architecture import Architecture, component_renames

    arch = Architecture.from_json(architecture)
    components = fingerprint.get("components") or {}
    for old, new in (component_renames(arch) if arch else {}).items():
        if old in components and new not in components:
            components[new] = components.pop(old)
    fingerprint["components"] = dict(sorted(components.items()))


def describe_and_detect(path: Path, *, fmt: str, evidence) -> tuple[dict | None, dict | None]:
    """The self-description and the architecture from what analysis saw, plus a safetensors header
    (read again: it is small, and it holds the names and shapes even when the data could not be
    fingerprinted). Both come from the same detector, so they never disagree."""
    from workers.modelfiles.safetensors_reader import read_safetensors_header
    from workers.modelfiles.self_description import TensorEvidence, describe

    metadata = None
    if fmt == "diffusers":
        from workers.modelfiles.diffusers import read_model_index

        try:
            evidence.observe_model_index(read_model_index(path))
        except ModelFileError:
            pass  # the folder's own error is reported by the fingerprint; the tensors still speak
    if fmt == "safetensors":
        try:
            header = read_safetensors_header(path)
        except ModelFileError:
            header = None
        if header is not None:
            metadata, evidence = header.metadata, TensorEvidence()
            for entry in header.tensors:
                evidence.observe(entry.name, entry.shape)
    try:
        architecture = evidence.decide(fmt).to_json()
    except Exception:  # a guess is a nicety: it must never fail the analysis
        architecture = None
    try:
        return describe(metadata=metadata, evidence=evidence, fmt=fmt).to_json(), architecture
    except Exception:
        return None, architecture


def describe_analysed(path: Path, *, fmt: str, evidence) -> dict | None:
    """The self-description alone (see describe_and_detect)."""
    return describe_and_detect(path, fmt=fmt, evidence=evidence)[0]


def describe_path(path: Path) -> dict | None:
    """Describe a file already analysed (the `describe_files` backfill): names and shapes only.
    Pickle formats go through the restricted reader, which refuses dangerous files; nothing runs."""
    from workers.modelfiles.fingerprint import fingerprint_path
    from workers.modelfiles.self_description import TensorEvidence
    from workers.modelfiles.sniff import sniff

    fmt = sniff(path)
    evidence = TensorEvidence()
    try:
        if fmt in ("torch-zip", "torch-legacy", "torch-tar", "pickle", "npy", "npz"):
            from workers.modelfiles.torch_reader import iter_torch_tensors

            for tensor in iter_torch_tensors(path):  # views over the mapped file: no tensor data is read
                evidence.observe(tensor.name, tensor.shape)
        elif fmt == "diffusers":
            fingerprint_path(path, observe=evidence.observe)  # the readers' one walk of a folder
    except ModelFileError:
        pass  # what was seen before the error is still evidence
    return describe_analysed(path, fmt=fmt, evidence=evidence)
