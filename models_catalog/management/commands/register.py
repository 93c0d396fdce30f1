import sys
import time

from django.core.management.base import CommandError
from tqdm import tqdm

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.models import LocalFile
from models_catalog.services.paths import printable
from models_catalog.services.register import local_file_register


class Command(PipeSafeCommand):
    help = "Register model files and folders in place (they must lie under MODELXREF_MODEL_ROOTS) and hash them."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="files or folders; folders are searched for model files")
        parser.add_argument("--user", help="owner (default: the first admin)")
        parser.add_argument("--wait", action="store_true", help="show progress until the workers finish, then a summary")
        parser.add_argument("--timeout", type=float, default=0, help="with --wait: give up after this many seconds (0: never)")

    def handle(self, *args, paths, user, wait, timeout, **options):
        owner = cli_owner(user)
        outcome = local_file_register(paths=paths, owner=owner)
        for raw, why in outcome.refused:
            self.stderr.write(self.style.ERROR(f"refused: {why}"))
        self.stdout.write(
            f"{len(outcome.queued)} queued, {len(outcome.unchanged)} unchanged, "
            f"{len(outcome.failed)} failed, {len(outcome.refused)} refused"
        )
        ids = [lf.pk for lf in outcome.files]
        if wait and ids:
            self._wait(ids, timeout)
        if outcome.refused and not ids:
            raise CommandError("nothing registered")

    def _wait(self, ids: list[int], timeout: float) -> None:
        rows = LocalFile.objects.filter(pk__in=ids)
        started = time.monotonic()
        files_bar = tqdm(total=len(ids), desc="files", unit="file", position=0, file=sys.stderr)
        bytes_bar = tqdm(total=0, desc="bytes", unit="B", unit_scale=True, position=1, file=sys.stderr)
        try:
            while True:
                snapshot = list(rows.values("status", "bytes_done", "bytes_total", "size"))
                finished = sum(r["status"] in ("done", "error") for r in snapshot)
                total = sum(max(r["bytes_total"], r["size"] or 0) for r in snapshot)
                done = sum((r["size"] or r["bytes_total"]) if r["status"] in ("done", "error") else r["bytes_done"] for r in snapshot)
                bytes_bar.total = total
                bytes_bar.n = min(done, total)
                files_bar.n = finished
                files_bar.refresh(), bytes_bar.refresh()
                if finished == len(ids):
                    break
                if timeout and time.monotonic() - started > timeout:
                    raise CommandError(f"gave up waiting after {timeout:g} s: {len(ids) - finished} files still in progress")
                time.sleep(0.5)
        finally:
            files_bar.close(), bytes_bar.close()
        self._summary(rows)

    def _summary(self, rows) -> None:
        self.stdout.write(f"{'status':<9} {'size':>14}  {'AutoV2':<10}  name")
        for lf in rows.select_related("hashes").order_by("path"):
            autov2 = ""
            try:
                autov2 = lf.hashes.autov2.upper() if lf.hashes.autov2 else ("folder" if lf.hashes.folder_digest else "")
            except LocalFile.hashes.RelatedObjectDoesNotExist:
                pass
            size = f"{lf.size:,}" if lf.size is not None else "-"
            line = f"{lf.status:<9} {size:>14}  {autov2:<10}  {printable(lf.path)}"
            if lf.error:
                line += f"\n{'':<9} {'':>14}  {'':<10}  ! {lf.error}"
            self.stdout.write(line)
        errors = rows.filter(status=LocalFile.Status.ERROR).count()
        if errors:
            self.stderr.write(self.style.WARNING(f"{errors} file(s) ended in error (see above)"))
