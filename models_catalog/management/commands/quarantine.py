import json

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._file_actions import confirm, write_items
from models_catalog.management.commands._owner import cli_owner
from models_catalog.models import QuarantineEntry
from models_catalog.services.file_action_jobs import file_action_job_create
from models_catalog.services.file_actions import purge_quarantine, restore_files


class Command(PipeSafeCommand):
    help = ("Files moved into quarantine by `duplicates --apply quarantine`: list them, restore them to where they "
            "were, or purge them (delete for good, reporting the bytes freed).")

    def add_arguments(self, parser):
        parser.add_argument("what", choices=["list", "restore", "purge"])
        parser.add_argument("ids", nargs="*", type=int, help="entry ids (from `quarantine list`); purge: none means all")
        parser.add_argument("--user", help="whose files (default: the first admin)")
        parser.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")
        parser.add_argument("--yes", action="store_true", help="purge without asking (required when not on a terminal)")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, what, ids, user, dry_run, yes, as_json, **options):
        owner = cli_owner(user)
        if what == "list":
            return self._list(owner, ids, as_json)
        if what == "restore":
            if not ids:
                raise CommandError("restore needs the entry ids to put back (see `quarantine list`)")
            return self._run(owner, "restore", {"entry_ids": ids}, dry_run, as_json)
        entry_ids = ids or None
        plan = purge_quarantine(owner=owner, entry_ids=entry_ids, dry_run=True)
        if not plan.items:
            self.stdout.write("the quarantine is empty")
            return
        if as_json and dry_run:
            self.stdout.write(json.dumps({"job_id": None, **plan.to_json()}, indent=2))
            return
        if not as_json:
            write_items(self, plan.to_json())
            self.stdout.write(plan.summary())
        if dry_run:
            return
        if not plan.count("planned"):
            self.stdout.write("nothing to do: every file was skipped")
            return
        if not yes and not confirm("Delete these files for good?"):
            self.stdout.write("nothing was changed")
            return
        self._run(owner, "purge", {"entry_ids": entry_ids}, False, as_json)

    def _list(self, owner, ids, as_json):
        entries = QuarantineEntry.objects.filter(owner=owner).select_related("local_file").order_by("pk")
        if ids:
            entries = entries.filter(pk__in=ids)
        rows = [{"id": e.pk, "file_id": e.local_file_id, "name": e.local_file.name, "size": e.size,
                 "original_path": e.original_path, "quarantine_path": e.quarantine_path,
                 "created_at": e.created_at.isoformat()} for e in entries]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("the quarantine is empty")
            return
        for r in rows:
            self.stdout.write(f"{r['id']:>6}  {filesizeformat(r['size']):>10}  {r['created_at'][:19]}  {r['original_path']}")
            self.stdout.write(f"{'':>6}  {'':>10}  {'':>19}  now at {r['quarantine_path']}")
        self.stdout.write(f"\n{len(rows)} file(s), {filesizeformat(sum(r['size'] for r in rows))} in quarantine")

    def _run(self, owner, kind, params, dry_run, as_json):
        if dry_run:
            report = restore_files(owner=owner, dry_run=True, **params).to_json()
            job_id = None
        else:
            job = file_action_job_create(owner=owner, kind=kind, params=params, dry_run=False, inline=True)
            report, job_id = job.result or {}, job.pk
        if as_json:
            self.stdout.write(json.dumps({"job_id": job_id, **report}, indent=2))
            return
        write_items(self, report)
        self.stdout.write((f"job {job_id}: " if job_id else "") + report.get("summary", ""))
