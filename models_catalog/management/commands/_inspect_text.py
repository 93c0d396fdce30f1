"""`manage.py inspect` for people: sections of aligned rows, every value in words.

It renders the very report `--json` prints, so the two forms cannot disagree.
Text that comes from disk (paths, member and tensor names, pickle globals) is
hostile: the command passes every line through `printable` on its way out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from models_catalog.models import FileHashes, LocalFile, Match
from workers import kinds
from workers.hashing import AUTOV1_MIN_SIZE
from workers.modelfiles.analyse import FINGERPRINTABLE
from workers.modelfiles.types import FORMAT_MEANING, VERDICT_MEANING

HASH_KINDS = kinds.CIVITAI_NAMES
FINDINGS_SHOWN = 20  # a hostile pickle can produce thousands; --json has them all
SHORT_ID = 12  # hex digits of a component id: enough to tell components apart by eye
LABEL_WIDTH = 13
INDENT = "  "


@dataclass
class Section:
    title: str
    rows: list[str] = field(default_factory=list)

    def add(self, label: str, value: object = "") -> None:
        """One `label  value` row; a value of several lines keeps its lines under the value column."""
        first, *rest = str(value).split("\n") or [""]
        self.rows.append(f"{INDENT}{label:<{LABEL_WIDTH}} {first}".rstrip())
        self.rows += [f"{INDENT}{'':<{LABEL_WIDTH}} {line}".rstrip() for line in rest]

    def extend(self, lines: list[str], indent: str = INDENT) -> None:
        self.rows += [f"{indent}{line}".rstrip() for line in lines]


def inspect_sections(report: dict) -> list[Section]:
    """The report of `models_catalog.services.inspect.inspect_path` as sections to print."""
    hashes = report.get("hashes")
    is_folder = isinstance(hashes, dict) and "members" in hashes
    what = Section("Folder" if is_folder else "File")
    what.add("path", report.get("path", "?"))
    if "error" in report:  # the hash engine could not read it: nothing else was looked at
        what.add("contents", f"unreadable: {report['error']}")
        return [what]
    sections = [what]
    _describe(what, report, hashes, is_folder)
    sections.append(_self_description(report))
    sections.append(_fingerprint(report))
    sections.append(_folder_hashes(report, hashes) if is_folder else _file_hashes(report, hashes))
    sections.append(_catalog(report, hashes, is_folder))
    return sections


# --- what the file is ------------------------------------------------------------


def _describe(section: Section, report: dict, hashes: dict, is_folder: bool) -> None:
    fmt = report.get("format") or "unknown"
    section.add("format", f"{fmt}: {FORMAT_MEANING.get(fmt, 'a format this version does not describe')}")
    size = human_size(hashes["size"]) + (f" ({hashes['size']:,} bytes)" if hashes["size"] >= 1024 else "")
    if is_folder:
        count = len(hashes["members"])
        size += f" in {count} weight file{'s' if count != 1 else ''}"
    section.add("size", size)
    safety = report.get("safety") or {}
    verdict = safety.get("verdict") or "unreadable"
    section.add("safety", f"{verdict}: {VERDICT_MEANING.get(verdict, 'a verdict this version does not describe')}")
    findings = [f for f in safety.get("findings") or [] if isinstance(f, dict)]
    if findings:
        shown = [finding_in_words(f) for f in findings[:FINDINGS_SHOWN]]
        if len(findings) > FINDINGS_SHOWN:
            shown.append(f"... and {len(findings) - FINDINGS_SHOWN} more (--json lists them all)")
        section.add("findings", "\n".join(shown))
    if safety.get("globals"):
        section.add("globals", ", ".join(safety["globals"]))


def finding_in_words(finding: dict) -> str:
    """'dangerous: os.system: runs shell commands (at evil.ckpt@2)'."""
    where = f" (at {finding['where']})" if finding.get("where") else ""
    why = f": {finding['why']}" if finding.get("why") else ""
    return f"{finding.get('severity', '?')}: {finding.get('what', '?')}{why}{where}"


def _self_description(report: dict) -> Section:
    section = Section("What the file says about itself (header metadata, tensor names)")
    d = report.get("self_description")
    if not isinstance(d, dict):
        section.add("description", "none (the file could not be read that far)")
        return section
    guess = str(d.get("type_guess") or "unknown")
    if d.get("base_guess") and d.get("base_guess") != "unknown":
        guess += f" for {d['base_guess']}"
    section.add("looks like", guess)
    arch = report.get("architecture")
    if isinstance(arch, dict) and arch.get("label"):
        section.add("architecture", str(arch["label"]))
    if d.get("evidence"):
        section.add("because", "\n".join(str(e) for e in d["evidence"]))
    for label, key in (("title", "title"), ("author", "author"), ("date", "date"), ("network", "network_module"),
                       ("dim / alpha", None), ("resolution", "resolution"), ("epochs", None),
                       ("trained on", "sd_model_name")):
        if key is None and label == "dim / alpha":
            value = " / ".join(x for x in (d.get("network_dim"), d.get("network_alpha")) if x)
        elif key is None:
            value = " of ".join(x for x in (d.get("epoch"), d.get("num_epochs")) if x)
        else:
            value = d.get(key) or ""
        if value:
            section.add(label, str(value))  # the command makes every line printable
    tags = [t for t in d.get("top_tags") or [] if isinstance(t, list) and len(t) == 2]
    if tags:
        section.add("top tags", ", ".join(f"{t} ({n})" for t, n in tags[:10]))
    return section


def _fingerprint(report: dict) -> Section:
    section = Section("Tensor fingerprint (the same for renamed, converted and fp16 copies)")
    fp = report.get("fingerprint")
    if not isinstance(fp, dict):
        section.add("fingerprint", _why_no_fingerprint(report))
        return section
    section.add("content id", fp.get("content_id", "?"))
    section.add("precision id", fp.get("precision_id", "?"))
    if fp.get("bf16_id"):
        section.add("bf16 id", fp["bf16_id"])
    if fp.get("fp8_id"):
        section.add("fp8 id", fp["fp8_id"])
    if fp.get("e5m2_id"):
        section.add("fp8 e5m2 id", fp["e5m2_id"])
    tensors = f"{fp.get('tensors', 0):,}"
    if fp.get("ignored_tensors"):
        tensors += (f" (and {fp['ignored_tensors']:,} left out: buffers that are not weights, "
                    "LoRA alphas equal to their rank)")
    section.add("tensors", tensors)
    section.add("parameters", f"{fp.get('parameters', 0):,} ({human_count(fp.get('parameters', 0))})")
    if "nbytes" in fp:
        section.add("tensor data", human_size(fp["nbytes"]))
    dtypes = fp.get("dtypes") or {}
    section.add("dtypes", ", ".join(f"{name} x{count:,}" for name, count in dtypes.items()) or "-")
    components = fp.get("components") or {}
    if components:
        rows = [(name, f"{c.get('tensors', 0):,}", human_count(c.get("parameters", 0)), human_size(c.get("nbytes", 0)),
                 str(c.get("content_id", ""))[:SHORT_ID], str(c.get("precision_id", ""))[:SHORT_ID])
                for name, c in components.items() if isinstance(c, dict)]
        table = aligned(("component", "tensors", "parameters", "data", "content", "precision"), rows,
                        right={1, 2, 3})
        section.add("components", "\n".join(table))
    return section


def _why_no_fingerprint(report: dict) -> str:
    verdict = (report.get("safety") or {}).get("verdict")
    error = report.get("analysis_error") or "no reason given"
    if verdict in ("dangerous", "unreadable"):
        return f"not computed: a file judged {verdict} is never read further"
    if report.get("format") not in FINGERPRINTABLE:
        return f"not computed: {error}"
    return f"unreadable: {error}"


# --- hashes ------------------------------------------------------------------------


def _file_hashes(report: dict, hashes: dict) -> Section:
    where = "from the hash cache: unchanged since last read" if report.get("hash_cache_hit") else "computed now"
    section = Section(f"Hashes (Civitai form, {where})")
    section.extend(_hash_rows(hashes))
    return section


def _folder_hashes(report: dict, hashes: dict) -> Section:
    section = Section("Hashes (Civitai form, per weight file)")
    section.add("folder digest", hashes.get("digest", "?"))
    section.add("InvokeAI", hashes.get("invokeai_hash", "?"))
    for member in hashes["members"]:
        member_hashes = member.get("hashes") or {}
        section.rows.append(f"{INDENT}{member.get('relative_path', '?')}  ({human_size(member_hashes.get('size', 0))})")
        section.extend(_hash_rows(member_hashes), indent=INDENT * 2)
    return section


def _hash_rows(hashes: dict) -> list[str]:
    rows = []
    for kind in HASH_KINDS:
        value = hashes.get(kind)
        if value:
            rows.append((kind, value))
        elif kind == "AutoV1" and hashes.get("size", 0) < AUTOV1_MIN_SIZE:
            rows.append((kind, f"- (only files of {human_size(AUTOV1_MIN_SIZE)} or more have one)"))
        else:
            rows.append((kind, "-"))
    embedded = hashes.get("embedded") or {}
    for key, value in embedded.items():
        if value:
            rows.append(("embedded", f"{value} ({key} in the file's metadata)"))
    return aligned(None, rows)


# --- what the catalog stored ---------------------------------------------------------


def _catalog(report: dict, hashes: dict, is_folder: bool) -> Section:
    section = Section("In the catalog")
    rows = report.get("registered") or []
    if not rows:
        section.rows.append(f"{INDENT}not registered (`manage.py register PATH` adds it, under the model roots)")
        return section
    for row in rows:
        status = _label(LocalFile.Status, row.get("status"))
        section.rows.append(f"{INDENT}file #{row.get('id')} of {row.get('owner')}: {status}")
        if row.get("error"):
            section.add(f"{INDENT}error", row["error"])
        stored = ", ".join(x for x in (row.get("format"), row.get("safety_verdict")) if x)
        if stored:
            section.add(f"{INDENT}stored as", stored)
        section.add(f"{INDENT}hashes", _stored_hashes_in_words(row, hashes, is_folder))
        matches = row.get("matches") or []
        if not matches:
            section.add(f"{INDENT}matches", "none yet" if row.get("status") != "done" else "none")
        for n, m in enumerate(matches):
            kind = _label(Match.Kind, m.get("kind"))
            text = f"{m.get('kind')} ({kind}): {m.get('model')}, file {m.get('file')}"
            if m.get("evidence"):
                text += f"\n  {m['evidence']}"
            section.add(f"{INDENT}matches" if n == 0 else "", text)
    return section


def _stored_hashes_in_words(row: dict, hashes: dict, is_folder: bool) -> str:
    if "hashes" not in row:
        return "none stored yet"
    source = _label(FileHashes.Source, row.get("hashes_source"))
    if is_folder:
        same = row.get("folder_digest") == hashes.get("digest")
    else:
        stored = row["hashes"] or {}
        compared = [kind for kind in HASH_KINDS if stored.get(kind) and hashes.get(kind)]
        same = bool(compared) and all(stored[kind] == hashes[kind] for kind in compared)
    agreement = "agree with the file now" if same else "differ from the file now: it changed, register it again"
    return f"{source}; {agreement}"


def _label(choices, value) -> str:
    try:
        return str(choices(value).label)
    except ValueError:
        return str(value)


# --- formatting ------------------------------------------------------------------------


def aligned(header: tuple[str, ...] | None, rows: list[tuple], *, right: set[int] = frozenset()) -> list[str]:
    """Rows as columns two spaces apart; columns in `right` are right-aligned (numbers)."""
    table = ([header] if header else []) + [tuple(str(cell) for cell in row) for row in rows]
    if not table:
        return []
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    last = len(widths) - 1
    return ["  ".join(cell.rjust(widths[i]) if i in right else (cell if i == last else cell.ljust(widths[i]))
                      for i, cell in enumerate(row)).rstrip() for row in table]


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return str(n)
