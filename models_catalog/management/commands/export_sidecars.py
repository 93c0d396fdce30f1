import json

from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.sidecar_export import describe, sidecars_export


class Command(PipeSafeCommand):
    help = ("Write <name>.civitai.info (SD Civitai Helper's layout) and, when a preview is stored, "
            "<name>.preview.png beside each identified file under PATH (inside your model roots). "
            "A newer file already there is kept unless --force.")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--force", action="store_true", help="replace sidecars newer than what ModelXRef knows")
        parser.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
        parser.add_argument("--user", help="whose files (default: the first admin)")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, path, force, dry_run, user, as_json, **options):
        outcome = sidecars_export(owner=cli_owner(user), folder=path, force=force, dry_run=dry_run)
        if as_json:
            self.stdout.write(json.dumps(outcome.to_json(), indent=2))
        if outcome.error:
            raise CommandError(outcome.error)
        if as_json:
            return
        for result in outcome.results:
            line = describe(result)
            self.stdout.write(self.style.WARNING(line) if result.action == "skipped" else line)
        verb = "would write" if dry_run else "written"
        self.stdout.write(f"{outcome.written} {verb}, {outcome.skipped} skipped"
                          + ("" if outcome.results else " (no identified file under that folder)"))
