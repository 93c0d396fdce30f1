
from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.import_hashes import hashes_import


class Command(PipeSafeCommand):
    help = ("Import hashes other tools computed (A1111/Forge cache.json, .civitai.info, .cm-info.json, "
            "civitai-browser-plus .json) from a folder under the model roots, without reading model files.")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--user")

    def handle(self, *args, path, user, **options):
        outcome = hashes_import(root=path, owner=cli_owner(user))
        for where, why in outcome.errors:
            self.stderr.write(self.style.ERROR(f"error: {where}: {why}"))
        for where, why in outcome.skipped:
            self.stdout.write(f"skipped {where}: {why}")
        self.stdout.write(f"{len(outcome.imported)} imported (marked 'imported' until `register` confirms them), "
                          f"{len(outcome.skipped)} skipped, {len(outcome.errors)} errors")
