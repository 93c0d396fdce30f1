import json

from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.lookup import hash_lookup
from models_catalog.services.paths import printable
from workers.hash_parse import HashQueryError


class Command(PipeSafeCommand):
    help = ("Look a hash up: AutoV1/CRC32 (8 hex), AutoV2 (10), AutoV3/SHA256_12 (12), SHA256/BLAKE3 (64), "
            "sha256:/blake3:/sha256_12: prefixes, or a pasted A1111 infotext. Local catalog first, then Civitai.")

    def add_arguments(self, parser):
        parser.add_argument("text", nargs="+", help="the hash or infotext (quote it)")
        parser.add_argument("--json", action="store_true", dest="as_json")
        parser.add_argument("--offline", action="store_true", help="do not ask Civitai")
        parser.add_argument("--user", help="whose local files to include (default: the first admin)")

    def handle(self, *args, text, as_json, offline, user, **options):
        try:
            owner = cli_owner(user)
        except CommandError:
            owner = None
        try:
            results = hash_lookup(text=" ".join(text), user=owner, ask_civitai=not offline)
        except HashQueryError as exc:
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps([r.to_json() for r in results], indent=2))
            return
        for r in results:
            label = f" ({r.label})" if r.label else ""
            self.stdout.write(self.style.MIGRATE_HEADING(f"{r.query}{label}: tried {', '.join(r.kinds_tried)}; Civitai: {r.civitai}"))
            if r.note:
                self.stdout.write(f"  note: {r.note}")
            if not r.matches:
                self.stdout.write("  no match")
            for m in r.matches:
                if m.source == "my files":
                    # One of my copies: what it is first, then which of my files and the hash that agreed.
                    whose = f" (owner: {printable(m.owner)})" if m.owner else ""  # staff see everyone's copies
                    self.stdout.write(f"  [my files] {printable(m.file)}{whose}: {m.summary}  ({m.evidence})")
                    continue
                where = " ".join(x for x in (m.model, m.version) if x)
                self.stdout.write(f"  [{m.source}] {m.match}: {where + ', file ' if where else ''}{m.file}  ({m.evidence})")
                if m.url:
                    self.stdout.write(f"      {m.url}")
