import os
import sys
import time

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat
from tqdm import tqdm

from models_catalog.identity import IdentityState, file_identities
from models_catalog.library_report import LibraryReport, library_report
from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.models import LocalFile
from models_catalog.services.paths import printable
from models_catalog.services.register import local_file_register
from models_catalog.services.worker_liveness import HASHING_QUEUE, LOOKUPS_QUEUE, no_worker_for

POLL_SECONDS = 0.5
IDENTITIES_EVERY = 5.0  # seconds between identity checks while files are still being hashed
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
WATCH_CHUNK = 2_000  # ids per query while watching (SQLite takes at most 250,000 parameters)


class Command(PipeSafeCommand):
    help = ("Register model files and folders in place (they must lie under MODELXREF_MODEL_ROOTS); with --wait, "
            "wait until they are hashed, read and identified, then say what each one is.")

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="files or folders; folders are searched for model files")
        parser.add_argument("--user", help="owner (default: the first admin)")
        parser.add_argument("--wait", action="store_true",
                            help="show progress until the files are hashed, read and identified, then a summary")
        parser.add_argument("--timeout", type=float, default=0, help="with --wait: give up after this many seconds (0: never)")
        parser.add_argument("--stall-timeout", type=float, default=900,
                            help="with --wait: give up when nothing moved for this many seconds (0: never)")

    def handle(self, *args, paths, user, wait, timeout, stall_timeout, **options):
        owner = cli_owner(user)
        # Only --wait follows the rows, so only it keeps every id (8 bytes a file, never the paths).
        outcome = local_file_register(paths=paths, owner=owner, keep_ids=wait)
        for raw, why in outcome.refused:
            self.stderr.write(self.style.ERROR(f"refused: {why}"))
        if outcome.counts["refused"] > len(outcome.refused):
            self.stderr.write(self.style.ERROR(f"... and {outcome.counts['refused'] - len(outcome.refused)} more refused"))
        counts = outcome.counts
        self.stdout.write(
            f"{counts['queued']} queued, {counts['unchanged']} unchanged, "
            f"{counts['failed']} failed, {counts['refused']} refused"
        )
        ids = list(outcome.file_ids) if wait else []
        if outcome.queue_error:
            raise CommandError(f"{outcome.queue_error}; start the broker (or the workers) and they are picked up "
                               "within a minute, or run this command again")
        if wait and ids:
            self._wait(ids, owner, timeout=timeout, stall_timeout=stall_timeout)
            self._summary(library_report(local_file_ids=ids, viewer=owner))
        if outcome.counts["refused"] and not outcome.registered:
            raise CommandError("nothing registered")

    # --- waiting ----------------------------------------------------------------

    def _wait(self, ids: list[int], owner, *, timeout: float, stall_timeout: float) -> None:
        """Until every file is hashed, read AND identified (or its sources said why not)."""
        interactive = sys.stderr.isatty()
        bars = _Bars(len(ids)) if interactive else None
        watch = _Watch(ids)
        started = last_change = time.monotonic()
        last_state, last_plain = None, 0.0
        identities_at = float("-inf")
        no_worker = ""
        try:
            while True:
                now = time.monotonic()
                # Identities cost a few queries over the hashed files: while files are still being hashed,
                # ask only now and then, so a large registration's watcher does not take CPU from the workers.
                ask = watch.all_hashed or now - identities_at >= IDENTITIES_EVERY
                p = watch.poll(viewer=owner, identities=ask)
                if ask:
                    identities_at = now
                    said, no_worker = no_worker, _no_worker(p, len(ids))
                    if no_worker and no_worker != said:
                        if bars:
                            bars.files.write(f"warning: {no_worker}", file=sys.stderr)
                        else:
                            self.stderr.write(self.style.WARNING(f"warning: {no_worker}"))
                if p.state != last_state:
                    last_state, last_change = p.state, now
                if bars:
                    bars.show(p)
                elif now - last_plain >= PLAIN_PROGRESS_EVERY or p.finished == len(ids):
                    last_plain = now
                    self.stderr.write(p.line(len(ids)))
                if p.finished == len(ids):
                    return
                if timeout and now - started > timeout:
                    raise CommandError(f"gave up waiting after {timeout:g} s: {p.still(len(ids))}"
                                       + (f"; {no_worker}" if no_worker else ""))
                if stall_timeout and now - last_change > stall_timeout:
                    raise CommandError(f"nothing moved for {stall_timeout:g} s: {p.still(len(ids))}"
                                       + (f"; {no_worker}" if no_worker else ""))
                time.sleep(watch.interval())
        finally:
            if bars:
                bars.close()

    # --- the answer ---------------------------------------------------------------

    def _summary(self, report: LibraryReport) -> None:
        base = _common_folder([r.file.path for r in report.rows])
        rows = [(r.what, r.identity.badge if r.identity.match_kind else "", r.kind, r.safety,
                 printable(os.path.relpath(r.file.path, base) if base else r.file.path)) for r in report.rows]
        if base:
            self.stdout.write(f"under {printable(base)}:")
        headers = ("what it is", "how we know", "type", "safety", "file")
        widths = [min(40, max([len(h)] + [len(row[i]) for row in rows])) for i, h in enumerate(headers[:-1])]
        line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        self.stdout.write(line.format(*headers))
        for r, row in zip(report.rows, rows):
            self.stdout.write(line.format(*(_clip(v, w) for v, w in zip(row, widths)), row[-1]))
            note = _note(r)
            if note:
                self.stdout.write(f"{'':<{widths[0]}}  ! {note}")
        self.stdout.write("")
        self.stdout.write(report.totals_line())
        if report.totals["dangerous"]:
            self.stderr.write(self.style.WARNING(
                f"{report.totals['dangerous']} dangerous file(s): their pickles could run code if loaded; "
                "ModelXRef never loads them (see the findings with `manage.py inspect PATH`)"))


def _common_folder(paths: list[str]) -> str:
    """The folder all paths share (shown once above the table instead of on every line)."""
    if not paths:
        return ""
    common = os.path.commonpath(paths)
    return common if common not in paths else os.path.dirname(common)


def _clip(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _note(row) -> str:
    """What a user should know beyond the columns: why a file is broken or could not be asked."""
    identity = row.identity
    if identity.state == IdentityState.BROKEN or (identity.problem and not identity.match_kind):
        return printable(identity.problem)
    if row.file.safety_verdict == "unreadable" and row.file.analysis_error:
        return printable(row.file.analysis_error)
    return ""


def _no_worker(p: "_Progress", n: int) -> str:
    """Why nothing moves when no worker is alive for what the files wait for (hashing, then lookups)."""
    if p.hashed < n:
        return no_worker_for(HASHING_QUEUE)
    if p.waiting_for.startswith("Civitai"):
        return no_worker_for(LOOKUPS_QUEUE)
    return ""


class _Watch:
    """The rows `register --wait` follows, read in chunks, and only those not finished yet: a file whose
    identity is final (identified, unknown with the reason, broken) is counted once and never read
    again, so the polls of a 100,000-file registration shrink as it advances. A row deleted meanwhile
    (forgotten) is finished too: nothing more will happen to it."""

    def __init__(self, ids: list[int]):
        self.pending = sorted(set(ids))
        self.finished = 0
        self.finished_bytes = 0
        self.hashed_pending = 0
        self.waiting_for = ""

    @property
    def all_hashed(self) -> bool:
        return self.hashed_pending == len(self.pending)

    def interval(self) -> float:
        """Seconds between polls: 0.5 s, longer while many files are left (5 s at 100,000)."""
        return max(POLL_SECONDS, len(self.pending) / 20_000)

    def poll(self, *, viewer, identities: bool) -> "_Progress":
        done_states = (LocalFile.Status.DONE, LocalFile.Status.ERROR)
        files = []
        for start in range(0, len(self.pending), WATCH_CHUNK):
            chunk = LocalFile.objects.filter(pk__in=self.pending[start:start + WATCH_CHUNK]).only(
                "id", "status", "bytes_done", "bytes_total", "size", "error", "safety_verdict", "analysis_error",
                "described_as")
            files += chunk
        seen = {f.pk for f in files}
        gone = len(self.pending) - len(seen)
        hashed = [f for f in files if f.status in done_states]
        if identities:
            waiting: set[str] = set()
            final: set[int] = set()
            for start in range(0, len(hashed), WATCH_CHUNK):
                for pk, identity in file_identities(hashed[start:start + WATCH_CHUNK], viewer=viewer).items():
                    if identity.is_finished:
                        final.add(pk)
                    elif identity.state == IdentityState.WAITING and identity.waiting_for:
                        waiting.add(identity.waiting_for)
            self.waiting_for = min(waiting) if waiting else ""
            for f in files:
                if f.pk in final:
                    self.finished_bytes += max(f.bytes_total, f.size or 0)
            self.finished += len(final) + gone
            self.pending = [pk for pk in self.pending if pk in seen and pk not in final]
            files = [f for f in files if f.pk not in final]
            hashed = [f for f in hashed if f.pk not in final]
        self.hashed_pending = len(hashed)
        total = self.finished_bytes + sum(max(f.bytes_total, f.size or 0) for f in files)
        done = self.finished_bytes + sum(
            (f.size or f.bytes_total) if f.status in done_states else f.bytes_done for f in files)
        return _Progress(finished=self.finished, hashed=self.finished + len(hashed),
                         bytes_done=min(done, total), bytes_total=total, waiting_for=self.waiting_for)


class _Progress:
    """One poll's snapshot of a registration: hashed bytes, files finished, what they wait for."""

    def __init__(self, *, finished, hashed, bytes_done, bytes_total, waiting_for):
        self.finished, self.hashed = finished, hashed
        self.bytes_done, self.bytes_total = bytes_done, bytes_total
        self.waiting_for = waiting_for

    @property
    def state(self):
        return (self.finished, self.hashed, self.bytes_done, self.waiting_for)

    def line(self, n: int) -> str:
        text = (f"hashed {self.hashed}/{n} files ({filesizeformat(self.bytes_done)} of {filesizeformat(self.bytes_total)}), "
                f"identified {self.finished}/{n}")
        return text + (f"; waiting for {self.waiting_for}" if self.waiting_for else "")

    def still(self, n: int) -> str:
        if self.hashed < n:
            return f"{n - self.hashed} file(s) still being hashed or read"
        return f"{n - self.finished} file(s) not identified yet" + (
            f" (waiting for {self.waiting_for})" if self.waiting_for else "")


class _Bars:
    """Terminal progress: bytes hashed, and files identified with what they wait for."""

    def __init__(self, n: int):
        self.files = tqdm(total=n, desc="identified", unit="file", position=0, file=sys.stderr)
        self.bytes = tqdm(total=0, desc="hashed", unit="B", unit_scale=True, position=1, file=sys.stderr)

    def show(self, p: _Progress) -> None:
        self.bytes.total, self.bytes.n = p.bytes_total, p.bytes_done
        self.files.n = p.finished
        self.files.set_postfix_str(f"waiting for {p.waiting_for}" if p.waiting_for else "", refresh=False)
        self.files.refresh(), self.bytes.refresh()

    def close(self) -> None:
        self.files.close(), self.bytes.close()
