import json
from pathlib import Path

from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.services.inspect import inspect_path


class Command(PipeSafeCommand):
    help = "Show what ModelXRef knows about one file or diffusers folder (hashes, and what the catalog holds)."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, path, as_json, **options):
        try:
            report = inspect_path(path=Path(path))
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file or folder") from None
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=False))
            return
        for key, value in report.items():
            if isinstance(value, dict):
                self.stdout.write(f"{key}:")
                for k, v in value.items():
                    self.stdout.write(f"  {k:<12} {v if v is not None else '-'}")
            elif isinstance(value, list):
                self.stdout.write(f"{key}: {len(value)}")
                for item in value:
                    self.stdout.write(f"  - {item}")
            else:
                self.stdout.write(f"{key}: {value}")
