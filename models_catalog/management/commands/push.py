"""`manage.py push PATH... --server URL --token T`: the same as `python -m workers.push_client`.

The push runs on the machine that holds the files and talks to the server
over HTTP only, so this command never touches the local database.
"""
from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from workers import push_client


class Command(PipeSafeCommand):
    help = "Send the hashes (never the contents) of model files to a ModelXRef server; re-runs send only changes."
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        push_client.add_arguments(parser)

    def handle(self, *args, **options):
        status = push_client.run(_Args(options), out=self.stdout, err=self.stderr)
        if status:
            why = {1: "some files were not pushed (see above)", 130: "interrupted"}.get(status, "nothing more was pushed (see above)")
            raise CommandError(why, returncode=status)


class _Args:
    """argparse.Namespace-like view of the options Django hands to handle()."""

    def __init__(self, options: dict) -> None:
        self.__dict__.update(options)
