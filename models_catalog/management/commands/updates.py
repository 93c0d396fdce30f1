import json

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.updates import updates_for_user


class Command(PipeSafeCommand):
    help = ("My Civitai models with a newer published version than any I hold (as of the last hourly "
            "refresh): name, what I have, what is new, link.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json")
        parser.add_argument("--user", help="whose files (default: the first admin)")

    def handle(self, *args, as_json, user, **options):
        rows = updates_for_user(cli_owner(user))
        if as_json:
            self.stdout.write(json.dumps([r.to_json() for r in rows], indent=2))
            return
        if not rows:
            self.stdout.write("every model you hold is at its newest version (as of the last refresh)")
            return
        for r in rows:
            when = f", published {r.new.published_at:%Y-%m-%d}" if r.new.published_at else ""
            early = " (early access" + (f" until {r.new.early_access_ends_at:%Y-%m-%d}" if r.new.early_access_ends_at
                                         else "") + ")" if r.new.early_access else ""
            self.stdout.write(f"{r.model_name}: you have {', '.join(r.have)}; new: {r.new.name}{when}{early}")
            self.stdout.write(f"   {r.new.url or r.model_url}")
