"""manage.py describe_files [--all] [--user NAME]: what each finished file says about itself, for rows
analysed before descriptions existed (or all of them again with --all). Reads headers and tensor
names only; pickles go through the restricted reader, nothing is executed."""
from __future__ import annotations

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.models import LocalFile
from models_catalog.services.analysis import local_file_describe


class Command(PipeSafeCommand):
    help = "Describe finished local files from their own metadata and tensor names (a backfill)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="describe files that already have a description too")
        parser.add_argument("--user", help="only this user's files")

    def handle(self, *args, **options):
        # Pushed files are hashes only: their bytes are on another machine.
        files = LocalFile.objects.filter(status=LocalFile.Status.DONE, quarantined_at__isnull=True).exclude(
            origin=LocalFile.Origin.PUSHED)
        if not options["all"]:
            files = files.filter(self_description__isnull=True)
        if options["user"]:
            files = files.filter(owner__username=options["user"])
        ids = list(files.order_by("pk").values_list("pk", flat=True))
        described = 0
        for n, pk in enumerate(ids, 1):
            described += local_file_describe(local_file_id=pk)
            if n % 50 == 0 or n == len(ids):
                self.stdout.write(f"{n}/{len(ids)} files read, {described} described")
        if not ids:
            self.stdout.write("nothing to describe")
