import json
from pathlib import Path

from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._inspect_text import inspect_sections
from models_catalog.services.inspect import inspect_path
from models_catalog.services.paths import printable


class Command(PipeSafeCommand):
    help = ("Show what ModelXRef knows about one file or diffusers folder: format, safety, tensor fingerprint, "
            "hashes in Civitai form, and what the catalog stored for it (--json: the raw report).")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, path, as_json, **options):
        try:
            report = inspect_path(path=Path(path))
        except FileNotFoundError:
            raise CommandError(f"{printable(path)}: no such file or folder") from None
        except OSError as exc:
            raise CommandError(f"{printable(path)}: cannot open it ({exc.strerror or exc})") from None
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=False))
            return
        for n, section in enumerate(inspect_sections(report)):
            if n:
                self.stdout.write("")
            self.stdout.write(printable(section.title), self.style.MIGRATE_HEADING)
            for row in section.rows:
                # Names from disk may carry escape sequences; none reaches the terminal.
                self.stdout.write(printable(row))
