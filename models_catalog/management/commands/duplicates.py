import json

from django.template.defaultfilters import filesizeformat

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._file_actions import add_apply_arguments, handle_apply
from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.duplicates import PREFERENCES, duplicate_groups


class Command(PipeSafeCommand):
    help = "Groups of local files that hold the same model across names, containers and precisions."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json")
        parser.add_argument("--user", help="whose files (default: the first admin)")
        parser.add_argument("--all-users", action="store_true")
        parser.add_argument("--prefer", default="lossless", choices=PREFERENCES,
                            help="which copy to keep: lossless (default: a highest-precision copy) or a precision; "
                                 "choosing a lower precision says what it discards")
        add_apply_arguments(parser)  # duplicate actions: --apply hardlink|quarantine [--dry-run] [--yes]

    def handle(self, *args, as_json, user, all_users, prefer, **options):
        if options["apply"] or options["dry_run"] or options["yes"]:  # hook (duplicate actions): models_catalog/management/commands/_file_actions.py
            return handle_apply(self, action=options["apply"], user=user, all_users=all_users, prefer=prefer,
                                dry_run=options["dry_run"], yes=options["yes"], as_json=as_json)
        groups = duplicate_groups(owner=None if all_users else cli_owner(user), prefer_precision=prefer)
        if as_json:
            self.stdout.write(json.dumps([g.to_json() for g in groups], indent=2))
            return
        if not groups:
            self.stdout.write("no duplicates")
            return
        for i, g in enumerate(groups, 1):
            title = g.model or "unidentified model"
            self.stdout.write(self.style.MIGRATE_HEADING(
                f"{i}. {title}: {len(g.members)} copies; {_savings(g.lossless_bytes, g.lossy_bytes)} (keep: {g.reason})"))
            if g.warning:
                self.stdout.write(self.style.WARNING(f"   warning: {g.warning}"))
            for m in g.members:
                self.stdout.write(f"   [{m.copy_set}] {m.match:<17} {m.format or '?':<13} {m.precision or '?':<5} "
                                  f"{filesizeformat(m.size):>10}  {m.path}")
                if m.evidence:
                    self.stdout.write(f"       {m.evidence}")
        lossless, lossy = sum(g.lossless_bytes for g in groups), sum(g.lossy_bytes for g in groups)
        self.stdout.write(f"\n{len(groups)} groups; {_savings(lossless, lossy)} in all"
                          "\n[n]: members with the same number hold the same bytes")


def _savings(lossless: int, lossy: int) -> str:
    text = f"{filesizeformat(lossless)} reclaimable without loss"
    return text + (f", {filesizeformat(lossy)} more by dropping precision variants" if lossy else "")
