"""Convert a pickle checkpoint to safetensors without ever running it.

    python -m workers.convert PATH OUT [--dtype keep|fp16|bf16] [--allow-suspicious] [--json]

PURE: no Django, no torch, no database (`manage.py convert` and the web/API job add the model
roots and the catalog around `convert_checkpoint`). Every converter people use calls torch.load
first, and loading is what runs a hostile pickle. This one never unpickles: the pickles are read
by the opcode scanner and the restricted reader (workers/modelfiles), tensor bytes straight from
the file.

The steps, and why each is there:
1. Refuse by content, not name: only the formats the restricted reader reads (torch zip, legacy
   torch, bare pickles, .npz/.npy) and only a `safe` scan verdict (`suspicious` with
   allow_suspicious, its findings listed as ignored; never `dangerous` or `unreadable`).
2. One open file: the path is scanned, then opened once (no symlink in its place), and the open
   file must be the scanned one (device, inode, size, mtime and ctime, which no user can set back).
   Everything after reads that descriptor, and the identity is checked again before the rename, so
   a file changed or replaced mid-way leaves no output.
3. Plan from the object graph (modelfiles/convert_plan.py): names, dtypes, shapes, metadata and
   what is dropped are known before a tensor byte is read, so the header is written first.
4. Stream: a C-contiguous tensor is copied from the file in CHUNK_BYTES pieces (casts and hashes
   per piece), so memory does not grow with tensor size; a strided view (transposed, sliced,
   expanded, a view of a shared storage) is materialised first, as torch's .contiguous() would,
   which bounds memory by the largest tensor. Each piece is hashed as it is written.
5. Verify before the rename: fsync, re-read the written file with the strict safetensors reader,
   and compare every tensor (name, dtype, shape, content digest) and the fingerprint ids with what
   was meant: content_id equal to the source's, or for --dtype fp16 precision_id equal to the
   source's precision_id (computed from the source by the fingerprint's own fp16 cast, not ours).
6. The file appears under OUT only then, by a hard link from its temporary name beside it (never
   over an existing file); any failure removes the temporary file.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.modelfiles.casts import cast_chunk, output_dtype
from workers.modelfiles.convert_plan import (
    RESERVED_METADATA, PlannedTensor, Selection, select_from_graph, select_from_npy, select_from_npz,
)
from workers.modelfiles import scaled_fp8
from workers.modelfiles.fingerprint import ContentIdBuilder, TensorHasher, fingerprint_path, is_ignored_key, multiset_id
from workers.modelfiles.restricted_pickle import load_restricted
from workers.modelfiles.safetensors_reader import NUMPY_DTYPES, iter_safetensors_tensors, read_safetensors_header
from workers.modelfiles.safetensors_writer import Layout, safetensors_layout
from workers.modelfiles.sniff import sniff, sniff_mapped
from workers.modelfiles.torch_reader import read_checkpoint
from workers.modelfiles.types import FORMAT_MEANING, VERDICT_MEANING, Finding, ModelFileError, SafetyReport

DTYPE_CHOICES = ("keep", "fp16", "bf16")
CONVERTIBLE = frozenset({"torch-zip", "torch-legacy", "pickle", "npz", "npy"})
CHUNK_BYTES = 8 << 20  # a multiple of every element size; 8 MiB keeps the copy loop near disk speed
Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, "converting" | "verifying")


class ConvertError(Exception):
    """Nothing was written; the message says why in words. A refusal for the file's safety carries
    the scan's verdict and findings."""

    def __init__(self, message: str, *, verdict: str = "", findings: tuple[Finding, ...] = ()):
        super().__init__(message)
        self.verdict = verdict
        self.findings = tuple(findings)


@dataclass
class ConvertPlan:
    """What a conversion will write, known before any tensor byte is read (the page shows it first)."""
    source: str
    format: str
    verdict: str
    dtype: str                                # keep | fp16 | bf16
    selection: Selection
    ignored: tuple[Finding, ...] = ()         # suspicious findings accepted with allow_suspicious
    layout: Layout | None = None

    @property
    def metadata(self) -> dict[str, str]:
        # format=pt only beside other values (transformers refuses metadata without it): a plain state
        # dict then gets no metadata at all, the bytes safetensors' own save_file would write.
        return {**self.selection.metadata, **RESERVED_METADATA} if self.selection.metadata else {}

    @property
    def tensors(self) -> list[PlannedTensor]:
        return self.selection.tensors

    @property
    def output_size(self) -> int:
        return self.layout.file_size

    @property
    def source_tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def dtypes_written(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for placed in self.layout.order:
            counts[placed.dtype] = counts.get(placed.dtype, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict:
        return {
            "source": self.source, "format": self.format, "verdict": self.verdict, "dtype": self.dtype,
            "tensors": len(self.tensors), "dtypes": self.dtypes_written(), "output_size": self.output_size,
            "source_tensor_bytes": self.source_tensor_bytes, "unwrapped": self.selection.unwrapped,
            "metadata": self.metadata, "dropped": [d.to_json() for d in self.selection.dropped],
            "dropped_count": self.selection.dropped_count, "dropped_weights": self.selection.dropped_weights,
            "ignored_findings": [_finding_json(f) for f in self.ignored],
        }


@dataclass
class Verification:
    content_id: str         # of the written file, as the catalog's fingerprint computes it
    precision_id: str       # "" unless --dtype fp16 (the catalog computes it when the file is registered)
    checked: list[str] = field(default_factory=list)  # what was compared, in words

    def to_json(self) -> dict:
        return {"content_id": self.content_id, "precision_id": self.precision_id, "checked": self.checked}


@dataclass
class ConvertResult:
    plan: ConvertPlan
    output: str
    verification: Verification
    seconds: float

    def to_json(self) -> dict:
        return {**self.plan.to_json(), "output": self.output, "verification": self.verification.to_json(),
                "seconds": round(self.seconds, 3)}


# --- the two entry points -------------------------------------------------------------------

def plan_conversion(path: str | os.PathLike, *, dtype: str = "keep", allow_suspicious: bool = False) -> ConvertPlan:
    """Scan and plan only (reads the pickles, no tensor data): what `convert_checkpoint` would write."""
    with _OpenSource(Path(path), allow_suspicious=allow_suspicious) as source:
        return source.plan(dtype)


def output_sizes(plan: ConvertPlan) -> dict[str, int]:
    """The output's size for each --dtype, from one plan (the web page shows all three before you choose)."""
    return {d: safetensors_layout(((t.name, output_dtype(t.dtype, d, name=t.name), t.shape) for t in plan.tensors),
                                  plan.metadata).file_size for d in DTYPE_CHOICES}


def convert_checkpoint(path: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "keep",
                       allow_suspicious: bool = False, progress: Progress | None = None,
                       expect_content_id: str = "", expect_precision_id: str = "",
                       temp_path: str | os.PathLike | None = None) -> ConvertResult:
    """Write `path` as a verified safetensors file at `out` (which must not exist). Raises ConvertError.

    `expect_content_id` / `expect_precision_id`: ids the catalog already holds for the source; when
    every tensor the fingerprint counts is written, the output must have them too (a second,
    independent reading of the source). `temp_path`: the temporary name (default: a random hidden
    name beside `out`); a job passes its own so a retry replaces what a killed run left behind.
    """
    started = time.monotonic()
    if dtype not in DTYPE_CHOICES:
        raise ConvertError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_CHOICES)}")
    out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        raise ConvertError(f"{out} already exists: choose another output name (nothing is replaced)")
    if not out.parent.is_dir():
        raise ConvertError(f"{out.parent} is not a folder")
    temp = Path(temp_path) if temp_path else out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    with _OpenSource(Path(path), allow_suspicious=allow_suspicious) as source:
        if os.path.realpath(out) == str(source.path):
            raise ConvertError("the output would replace the source")
        plan = source.plan(dtype)
        total = plan.source_tensor_bytes + plan.output_size
        report = _Reporter(progress, total)
        try:
            if temp.exists() or temp.is_symlink():
                temp.unlink()  # our own leftover: a job's earlier run that was killed
            written = _write(source, plan, temp, report)
            verification = _verify(temp, plan, written, report, expect_content_id=expect_content_id,
                                   expect_precision_id=expect_precision_id)
            source.check_unchanged()
            _link_into_place(temp, out)
        except ModelFileError as exc:  # a strided view or an npz array that does not read after all
            _remove(temp)
            raise ConvertError(f"{source.path.name} cannot be converted: {exc}") from None
        except OSError as exc:  # a full disk, a folder we may not write
            _remove(temp)
            raise ConvertError(f"could not write {out}: {exc.strerror or exc}") from None
        except BaseException:
            _remove(temp)
            raise
    return ConvertResult(plan=plan, output=str(out), verification=verification,
                         seconds=time.monotonic() - started)


# --- the source: scanned, then opened once ----------------------------------------------------

class _OpenSource:
    def __init__(self, path: Path, *, allow_suspicious: bool):
        self.given, self.allow_suspicious = path, allow_suspicious
        self.fd = -1
        self.buf = None

    def __enter__(self) -> _OpenSource:
        try:
            self.path = self.given.resolve(strict=True)
            before = os.stat(self.path)
        except (OSError, RuntimeError) as exc:
            raise ConvertError(f"{self.given}: {getattr(exc, 'strerror', None) or exc}") from None
        if self.path.is_dir():
            raise ConvertError(f"{self.given} is a folder: convert its weight files one by one")
        if not self.path.is_file():
            raise ConvertError(f"{self.given} is not a regular file")
        # The verdict first: a hostile file is refused for what it is, whatever its format.
        self.report = _scan(self.path)
        self.ignored = _refuse_unless_acceptable(self.report, self.path.name, allow_suspicious=self.allow_suspicious)
        self.format = _format_of(self.path)
        self.identity = _identity(before)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
            self.check_unchanged(what="scanned")
            self.buf = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            self.__exit__()
            raise ConvertError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.__exit__()
            raise
        try:
            if sniff_mapped(self.buf) != self.format:
                raise ConvertError(f"{self.path.name} changed while it was being scanned")
        except ModelFileError as exc:
            self.__exit__()
            raise ConvertError(f"{self.path.name}: {exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.buf is not None:
            try:
                self.buf.close()
            except BufferError:  # a numpy view still alive after an error: the GC closes it later
                pass
            self.buf = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_unchanged(self, what: str = "converted") -> None:
        now = [_identity(os.fstat(self.fd))]
        try:
            now.append(_identity(os.stat(self.path)))
        except OSError:
            now.append(None)
        if any(n != self.identity for n in now):
            raise ConvertError(f"{self.path} changed while it was being {what} (its size, times or inode are not "
                               "the ones it had when it was scanned): nothing was written; run it again")

    def plan(self, dtype: str) -> ConvertPlan:
        if dtype not in DTYPE_CHOICES:
            raise ConvertError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_CHOICES)}")
        try:
            selection = self._select()
            plan = ConvertPlan(source=str(self.path), format=self.format, verdict=self.report.verdict, dtype=dtype,
                               selection=selection, ignored=self.ignored)
            plan.layout = safetensors_layout(((t.name, output_dtype(t.dtype, dtype, name=t.name), t.shape) for t in selection.tensors),
                                             plan.metadata)
        except ModelFileError as exc:
            raise ConvertError(f"{self.path.name} cannot be converted: {exc}") from None
        return plan

    def _select(self) -> Selection:
        buf = self.buf
        if self.format in ("torch-zip", "torch-legacy"):
            ckpt = read_checkpoint(buf, self.format)
            return select_from_graph(ckpt.value, locate=ckpt.locate, file_size=len(buf), big_endian=ckpt.big_endian,
                                     buf=buf)
        if self.format == "pickle":
            value, _ = load_restricted(buf, persistent_load=_no_storages)
            return select_from_graph(value, locate=None, file_size=len(buf))
        if self.format == "npz":
            return select_from_npz(buf)
        return select_from_npy(buf, name=self.path.stem)


def _no_storages(pid):
    raise ModelFileError("a bare pickle refers to tensor storages it does not contain")


def _format_of(path: Path) -> str:
    try:
        fmt = sniff(path)
    except ModelFileError as exc:
        raise ConvertError(f"{path.name}: {exc}") from None
    if fmt == "safetensors":
        raise ConvertError(f"{path.name} is already a safetensors file")
    if fmt not in CONVERTIBLE:
        raise ConvertError(f"{path.name} is {FORMAT_MEANING.get(fmt, fmt)} ({fmt}): the converter reads torch "
                           "checkpoints (zip and legacy), bare pickles of state dicts and numpy .npz/.npy files")
    return fmt


def _scan(path: Path) -> SafetyReport:
    from workers.modelfiles.analyse import scan  # an unreadable file becomes a verdict, not an exception

    return scan(path)


def _refuse_unless_acceptable(report: SafetyReport, name: str, *, allow_suspicious: bool) -> tuple[Finding, ...]:
    """The suspicious findings a conversion ignores; ConvertError for anything not convertible."""
    verdict = report.verdict
    if verdict == "safe":
        return ()
    if verdict == "suspicious" and allow_suspicious:
        return tuple(f for f in report.findings if f.severity == "suspicious")
    worst = [f for f in report.findings if f.severity == verdict][:3]
    found = "; ".join(f"{f.what} at {f.where} ({f.why})" for f in worst)
    hint = (" --allow-suspicious converts it anyway: the tensors are kept, what lies outside the allowlist is "
            "dropped and listed" if verdict == "suspicious" else " It is never converted.")
    raise ConvertError(f"refusing to convert {name}: its safety verdict is {verdict} ({VERDICT_MEANING[verdict]})"
                       + (f": {found}." if found else ".") + hint, verdict=verdict, findings=report.findings)


def _identity(st: os.stat_result) -> tuple:
    # ctime changes on every write and cannot be set back by a user, unlike mtime.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --- writing ------------------------------------------------------------------------------------

class _Reporter:
    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def add(self, nbytes: int, stage: str) -> None:
        self.done += nbytes
        if self.progress is not None:
            self.progress(self.done, self.total, stage)


@dataclass(frozen=True)
class _Written:
    dtype: str
    shape: tuple[int, ...]
    content: str                # digest of the bytes written
    source_precision: str = ""  # fp16 only: the source tensor's precision digest (the fingerprint's cast)


def _write(source: _OpenSource, plan: ConvertPlan, temp: Path, report: _Reporter) -> dict[str, _Written]:
    by_name = {t.name: t for t in plan.tensors}
    written: dict[str, _Written] = {}
    scratch = bytearray(CHUNK_BYTES)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        _write_all(fd, memoryview(plan.layout.header))
        for placed in plan.layout.order:
            tensor = by_name[placed.name]
            out_hash = TensorHasher(placed.dtype, tensor.shape, precision=False)
            # For an fp16 cast the catalog will link the file to its source by precision_id: hash
            # the source as the fingerprint does (its own cast), to check ours against it.
            source_hash = TensorHasher(tensor.dtype, tensor.shape) if plan.dtype == "fp16" else None
            for chunk in _chunks(tensor, source, scratch):
                if source_hash is not None:
                    source_hash.update(chunk)
                data = cast_chunk(chunk, tensor.dtype, placed.dtype)
                out_hash.update(data)
                _write_all(fd, memoryview(data).cast("B"))
                report.add(chunk.nbytes, "converting")
            written[placed.name] = _Written(placed.dtype, tensor.shape, out_hash.digests()[0],
                                            source_hash.digests()[1] if source_hash else "")
        size = os.fstat(fd).st_size
        if size != plan.layout.file_size:
            raise ConvertError(f"wrote {size:,} bytes where the layout says {plan.layout.file_size:,}")
        os.fsync(fd)  # what is verified next is what a crash would leave behind
    finally:
        os.close(fd)
    return written


def _chunks(tensor: PlannedTensor, source: _OpenSource, scratch: bytearray) -> Iterator[np.ndarray]:
    """The tensor's values as flat little-endian arrays (the reader's carry types), a piece at a time."""
    carry = NUMPY_DTYPES[tensor.dtype]
    if tensor.span is not None:
        begin, nbytes = tensor.span
        view = memoryview(scratch)
        stored = carry.newbyteorder(">") if tensor.big_endian else carry
        done = 0
        while done < nbytes:
            want = min(CHUNK_BYTES, nbytes - done)
            got = 0
            while got < want:
                n = os.preadv(source.fd, [view[got:want]], begin + done + got)
                if n <= 0:
                    raise ConvertError(f"{source.path} got shorter while it was being converted: nothing was written")
                got += n
            piece = np.frombuffer(view[:want], dtype=stored)
            yield piece.astype(carry) if tensor.big_endian else piece
            done += want
        return
    array = tensor.array if tensor.array is not None else tensor.load()
    flat = np.ascontiguousarray(array, dtype=carry).reshape(-1)
    step = CHUNK_BYTES // carry.itemsize
    for start in range(0, flat.size, step):
        yield flat[start:start + step]


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


# --- verifying ---------------------------------------------------------------------------------

def _verify(temp: Path, plan: ConvertPlan, written: dict[str, _Written], report: _Reporter, *,
            expect_content_id: str, expect_precision_id: str) -> Verification:
    """Re-read the file with the strict reader; every tensor must be the one meant, and the ids the
    catalog will compute must be the source's."""
    try:
        header = read_safetensors_header(temp)
        if header.metadata != plan.metadata:
            raise ConvertError("verification failed: the metadata read back differs from what was written")
        seen: dict[str, str] = {}
        canonical = ContentIdBuilder()  # the id as the catalog computes it (split tensors, LoRA alphas)
        for tensor in iter_safetensors_tensors(temp):
            meant = written.get(tensor.name)
            if meant is None or meant.dtype != tensor.dtype or meant.shape != tensor.shape:
                raise ConvertError(f"verification failed: tensor {tensor.name[:200]!r} was read back as "
                                   f"{tensor.dtype} {list(tensor.shape)}, not as written")
            hasher = TensorHasher(tensor.dtype, tensor.shape, precision=False)
            flat = tensor.array.reshape(-1)
            step = CHUNK_BYTES // max(1, flat.itemsize)
            for start in range(0, flat.size, step):
                hasher.update(flat[start:start + step])
            seen[tensor.name] = hasher.digests()[0]
            canonical.add(tensor, seen[tensor.name])
            report.add(flat.nbytes, "verifying")
            del flat, tensor  # the reader drops a tensor's pages once no view of them is left
    except ModelFileError as exc:
        raise ConvertError(f"verification failed: the written file does not read back: {exc}") from None
    if set(seen) != set(written):
        raise ConvertError("verification failed: the file read back lacks tensors that were written")
    wrong = [name for name, digest in seen.items() if digest != written[name].content]
    if wrong:
        raise ConvertError(f"verification failed: {len(wrong)} tensor(s) read back with other bytes than were "
                           f"written, e.g. {wrong[0][:200]!r}")
    counted = [name for name in seen if not is_ignored_key(name)]
    content_id = canonical.content_id()
    checked = [f"all {len(seen)} tensors re-read by the strict reader: names, dtypes, shapes and bytes as written"]
    comparable = plan.selection.dropped_weights == 0
    precision_id = ""
    if any(scaled_fp8.role(name) for name in seen):
        # ComfyUI scaled fp8: the catalog digests weights de-scaled and leaves the scales out, which
        # per-tensor digests cannot say: ask the fingerprint itself (its scales were never cast).
        try:
            fingerprint = fingerprint_path(temp)
        except ModelFileError as exc:
            raise ConvertError(f"verification failed: the written file does not fingerprint: {exc}") from None
        checked.append("scaled fp8: ids computed by the fingerprint (weights de-scaled, scales kept as they were)")
        if plan.dtype == "keep":
            _expect(expect_content_id, fingerprint.content_id, "content_id", comparable, checked)
        elif plan.dtype == "fp16":
            _expect(expect_precision_id, fingerprint.precision_id, "precision_id", comparable, checked)
        return Verification(content_id=fingerprint.content_id,
                            precision_id=fingerprint.precision_id if plan.dtype == "fp16" else "", checked=checked)
    if plan.dtype == "keep":
        checked.append("content_id equal to the source's (the same tensor bytes)")
        _expect(expect_content_id, content_id, "content_id", comparable, checked)
    elif plan.dtype == "fp16":
        # Every float is F16 now, and F16, F8 and non-float tensors are their own precision digest.
        precision_id = content_id
        # Tensor for tensor (before canonical forms, which the source's digests did not get): our cast
        # against the fingerprint's.
        source_precision_id = multiset_id(written[n].source_precision for n in counted)
        if multiset_id(seen[n] for n in counted) != source_precision_id:
            raise ConvertError("verification failed: the fp16 file's precision_id differs from the source's "
                               "(our cast and the fingerprint's disagree)")
        checked.append("precision_id equal to the source's (the fingerprint's own fp16 cast of the source)")
        _expect(expect_precision_id, precision_id, "precision_id", comparable, checked)
    else:
        checked.append("bf16 keeps fewer mantissa bits than fp16, so no fingerprint id links it to an fp32 source")
    return Verification(content_id=content_id, precision_id=precision_id, checked=checked)


def _expect(expected: str, actual: str, what: str, comparable: bool, checked: list[str]) -> None:
    if not expected:
        return
    if not comparable:
        checked.append(f"the catalog's {what} of the source also counts tensors that were dropped: not compared")
        return
    if expected != actual:
        raise ConvertError(f"verification failed: the output's {what} differs from the one the catalog holds for "
                           "the source (the two readings of the source disagree)")
    checked.append(f"{what} equal to the one the catalog holds for the source")


def _link_into_place(temp: Path, out: Path) -> None:
    try:
        os.link(temp, out)  # fails if `out` appeared meanwhile: never replace a file
    except FileExistsError:
        raise ConvertError(f"{out} appeared while converting: it was not replaced") from None
    except OSError:  # a filesystem without hard links
        if out.exists() or out.is_symlink():
            raise ConvertError(f"{out} appeared while converting: it was not replaced") from None
        os.rename(temp, out)
    else:
        os.unlink(temp)
    try:
        dir_fd = os.open(out.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the new name survives a crash too
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # reported by the caller's error; a leftover .partial is hidden and named as such


def _finding_json(f: Finding) -> dict:
    return {"severity": f.severity, "what": f.what, "where": f.where, "why": f.why}


# --- the command line -----------------------------------------------------------------------

def describe_result(result: ConvertResult) -> list[str]:
    """The summary lines the CLI and `manage.py convert` print."""
    plan = result.plan
    lines = [f"wrote {result.output} ({plan.output_size:,} bytes, {len(plan.tensors)} tensors: "
             + ", ".join(f"{k} {v}" for k, v in plan.dtypes_written().items()) + ")"]
    lines += describe_plan_details(plan)
    lines.append("verified: " + "; ".join(result.verification.checked))
    lines.append(f"content_id {result.verification.content_id}"
                 + (f", precision_id {result.verification.precision_id}" if result.verification.precision_id else ""))
    return lines


def describe_plan_details(plan: ConvertPlan) -> list[str]:
    lines = []
    if plan.selection.unwrapped:
        lines.append(f"weights: the {plan.selection.unwrapped!r} dict, named without its prefix")
    kept = [k for k in plan.selection.metadata]
    if kept:
        lines.append(f"kept as metadata ({len(kept)}): " + ", ".join(kept[:20]) + (" ..." if len(kept) > 20 else ""))
    for d in plan.selection.dropped:
        lines.append(f"dropped {d.name}: {d.what} — {d.why}")
    hidden = plan.selection.dropped_count - len(plan.selection.dropped)
    if hidden > 0:
        lines.append(f"... and {hidden} more dropped")
    for f in plan.ignored:
        lines.append(f"ignored (--allow-suspicious): {f.what} at {f.where} — {f.why}")
    return lines


def describe_refusal(exc: ConvertError) -> list[str]:
    lines = [str(exc)]
    if exc.verdict and exc.verdict != "safe":
        lines += [f"  {f.severity}: {f.what} at {f.where} — {f.why}" for f in exc.findings[:20]]
    return lines


def plain_progress(stream, every: float = 5.0) -> Progress:
    """A progress line now and then, for logs and pipes (tqdm draws bars on terminals)."""
    last = [0.0]

    def progress(done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every or done >= total:
            last[0] = now
            stream.write(f"{stage}: {done:,} of {total:,} bytes ({done * 100 // max(total, 1)}%)\n")
            stream.flush()
    return progress


def terminal_progress(stream) -> tuple[Progress, Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc="converting", file=stream)

    def progress(done: int, total: int, stage: str) -> None:
        bar.total, bar.n = total, done
        bar.set_description(stage, refresh=False)
        bar.refresh()
    return progress, bar.close


def build_parser(prog: str = "python -m workers.convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Convert a pickle checkpoint (torch .ckpt/.pt/.pth/.bin, legacy torch, a bare pickle, .npz) to a "
        "verified safetensors file, without ever running the pickle. Writes where it is told; "
        "`manage.py convert` also keeps to your model roots and registers the result."))
    parser.add_argument("path")
    parser.add_argument("out")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="keep",
                        help="keep the dtypes, or cast floating tensors to fp16 / bf16 (round to nearest even)")
    parser.add_argument("--allow-suspicious", action="store_true",
                        help="convert a file whose verdict is suspicious (what lies outside the allowlist is dropped)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    close = None
    if sys.stderr.isatty():
        progress, close = terminal_progress(sys.stderr)
    else:
        progress = plain_progress(sys.stderr)
    try:
        result = convert_checkpoint(args.path, args.out, dtype=args.dtype, allow_suspicious=args.allow_suspicious,
                                    progress=progress)
    except ConvertError as exc:
        if close:
            close()
        for line in describe_refusal(exc):
            sys.stderr.write(line + "\n")
        return 1
    if close:
        close()
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(describe_result(result)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
