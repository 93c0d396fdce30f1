"""Recompute tensor fingerprints made by an older fingerprint version, or without an architecture
(family / kind, and the per-family component names that came with it), or all of them with --all.

Fingerprint version 2 digests canonical tensor forms (fused attention split, swapped halves,
transposed projections) and adds the bf16 id, so SDXL / SD3 / Flux conversions and bf16 copies are
only linked once their files are read again. Each file is read again in this process (the same
analysis stage a worker runs: verdict, fingerprint, components, local matches); a file that changed
or went missing since it was hashed is skipped and named: register it again instead.
"""
from __future__ import annotations

import os

from django.core.management.base import CommandError
from django.db.models import Q
from tqdm import tqdm

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.models import LocalFile
from models_catalog.services.analysis import local_file_analyse
from workers.modelfiles.fingerprint import CURRENT_EXCEPT_KINDS, FINGERPRINT_VERSION


class Command(PipeSafeCommand):
    help = ("Read finished files again whose tensor fingerprint is older than this version or that have no "
            "architecture yet (or every one: --all).")

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", dest="every", help="every finished file, whatever its version")
        parser.add_argument("--user", help="whose files (default: the first admin)")
        parser.add_argument("--all-users", action="store_true")
        parser.add_argument("--dry-run", action="store_true", help="only count the files it would read")

    def handle(self, *args, every, user, all_users, dry_run, **options):
        files = LocalFile.objects.filter(status=LocalFile.Status.DONE, host="", is_folder=False,
                                         origin__in=(LocalFile.Origin.REGISTERED, LocalFile.Origin.UPLOADED))
        if not all_users:
            files = files.filter(owner=cli_owner(user))
        if not every:
            # Rows analysed before the architecture detector have no family yet, and those holding a T5
            # encoder or a bare CLIP projection have component names that changed (text_encoder_2 ->
            # t5xxl, text_projection now in text_encoder): reading them again refreshes both.
            current = Q(fingerprint__version=FINGERPRINT_VERSION)
            for version, kinds in CURRENT_EXCEPT_KINDS.items():  # what a later version left unchanged
                current |= Q(fingerprint__version=version) & ~Q(architecture_kind__in=kinds)
            files = files.exclude(fingerprint__isnull=True).filter(~current | Q(architecture__isnull=True))
        ids = list(files.order_by("pk").values_list("pk", flat=True))
        if dry_run:
            self.stdout.write(f"{len(ids)} file(s) would be read again (fingerprint version {FINGERPRINT_VERSION}, "
                              "architecture detection)")
            return
        done, skipped = 0, []
        for pk in tqdm(ids, desc="re-fingerprinting", unit="file", file=self.stderr._out, disable=not ids):
            lf = LocalFile.objects.filter(pk=pk).first()
            problem = _changed_since_hashed(lf) if lf else "forgotten meanwhile"
            if problem:
                skipped.append((lf.path if lf else str(pk), problem))
                continue
            # Compare-and-set, as a worker would: a file a worker is busy with is left to it.
            if not LocalFile.objects.filter(pk=pk, status=LocalFile.Status.DONE).update(status=LocalFile.Status.ANALYSING):
                skipped.append((lf.path, "being processed by a worker"))
                continue
            local_file_analyse(local_file_id=pk)
            done += 1
        for path, why in skipped:
            self.stdout.write(f"skipped {path}: {why}")
        self.stdout.write(f"{done} file(s) read again, {len(skipped)} skipped")
        if skipped and not done:
            raise CommandError("nothing was read again")


def _changed_since_hashed(lf: LocalFile) -> str:
    try:
        st = os.stat(lf.path, follow_symlinks=False)
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc} (register it again)"
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (lf.device, lf.inode, lf.size, lf.mtime_ns):
        return "changed since it was hashed (register it again)"
    return ""
