"""What `duplicates --apply` and `quarantine` share: printing a plan or a log, and asking before acting.

A plan is a dry run of the services (no file is read or changed, no row is written); what is applied
runs as a Job in this process (so no worker is needed) and its log is printed as it ends.
"""
from __future__ import annotations

import json
import sys

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.duplicate_actions import ACTIONS, action_params, group_plans
from models_catalog.services.duplicates import duplicate_groups
from models_catalog.services.file_action_jobs import file_action_job_create
from models_catalog.services.file_actions import hardlink_copies, quarantine_files

LABELS = {"planned": "would", "done": "done", "skipped": "skipped"}
NOT_A_TERMINAL = ("not applied: there is no terminal to confirm on; pass --yes to apply without asking "
                  "(or --dry-run to print the plan only)")


def add_apply_arguments(parser) -> None:
    parser.add_argument("--apply", choices=ACTIONS,
                        help="act on the groups' exact copies of their keeper: hardlink (replace each with a hard "
                             "link to the keeper) or quarantine (move each into the quarantine folder)")
    parser.add_argument("--dry-run", action="store_true", help="with --apply: print what would happen, change nothing")
    parser.add_argument("--yes", action="store_true",
                        help="with --apply: apply the plan without asking (required when not on a terminal)")


def confirm(question: str) -> bool:
    """Ask on the terminal; refuse (CommandError) when there is none to ask on."""
    if not sys.stdin or not sys.stdin.isatty():
        raise CommandError(NOT_A_TERMINAL)
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def write_items(command, report: dict) -> None:
    for item in report["items"]:
        label = LABELS.get(item["outcome"], item["outcome"])
        size = filesizeformat(item["bytes_freed"] or item["bytes_on_purge"]) if item["outcome"] != "skipped" else ""
        where = item["path"] or f"file {item['file_id'] or item['entry_id']}"
        style = command.style.WARNING if item["outcome"] == "skipped" else (lambda s: s)
        line = f"   {label:<8} {size:>10}  {where}"
        if item["target"] and item["outcome"] != "skipped" and report.get("action") != "hardlink":
            line += f" -> {item['target']}"
        command.stdout.write(style(f"{line}\n      {item['reason']}"))
    for note in report.get("notes", []):
        command.stdout.write(command.style.WARNING(f"   note: {note}"))


def handle_apply(command, *, action: str, user, all_users: bool, prefer: str, dry_run: bool, yes: bool,
                 as_json: bool) -> None:
    if not action:
        raise CommandError("--dry-run and --yes go with --apply hardlink|quarantine")
    if all_users:
        raise CommandError("--apply acts on one user's own files: pass --user instead of --all-users")
    owner = cli_owner(user)
    plans = group_plans(groups=duplicate_groups(owner=owner, prefer_precision=prefer), action=action)
    if not plans:
        command.stdout.write("nothing to do: no duplicate group holds an exact copy of its keeper")
        return
    planned = [_plan(owner, p, action) for p in plans]
    if as_json and dry_run:
        command.stdout.write(json.dumps([r.to_json() for r in planned], indent=2))
        return
    if not as_json:
        for n, (plan, report) in enumerate(zip(plans, planned), 1):
            title = plan.group.model or "unidentified model"
            keeper = next((m.path for m in plan.group.members if m.id == plan.keeper_id), plan.keeper_id)
            command.stdout.write(command.style.MIGRATE_HEADING(f"{n}. {title}: keep {keeper}"))
            write_items(command, report.to_json())
        command.stdout.write(_totals(action, planned))
    if dry_run:
        return
    if not any(r.count("planned") for r in planned):
        command.stdout.write("nothing to do: every file was skipped")
        return
    if not yes and not confirm("Apply this plan?"):
        command.stdout.write("nothing was changed")
        return
    jobs = []
    for plan in plans:
        kind, params = action_params(plan, action=action)
        jobs.append(file_action_job_create(owner=owner, kind=kind, params=params, dry_run=False, inline=True))
    if as_json:
        command.stdout.write(json.dumps([{"job_id": j.pk, "status": j.status, **(j.result or {})} for j in jobs], indent=2))
        return
    for job in jobs:
        command.stdout.write(command.style.MIGRATE_HEADING(f"job {job.pk}: {job.message}"))
        if job.result:
            write_items(command, job.result)
    if action == "hardlink":
        freed = filesizeformat(sum((j.result or {}).get("bytes_freed", 0) for j in jobs)) + " freed"
    else:
        freed = filesizeformat(sum((j.result or {}).get("bytes_on_purge", 0) for j in jobs)) + " in quarantine, freed once purged"
    command.stdout.write(f"\n{len(jobs)} job(s) run; {freed}")


def _plan(owner, plan, action):
    if action == "hardlink":
        return hardlink_copies(owner=owner, keeper_id=plan.keeper_id, copy_ids=plan.file_ids, dry_run=True)
    return quarantine_files(owner=owner, file_ids=plan.file_ids, dry_run=True)


def _totals(action: str, reports) -> str:
    files = sum(r.count("planned") for r in reports)
    skipped = sum(r.count("skipped") for r in reports)
    if action == "hardlink":
        what = f"{files} file(s) would be replaced by hard links, {filesizeformat(sum(r.bytes_freed for r in reports))} freed"
    else:
        what = (f"{files} file(s) would be moved into quarantine, "
                f"{filesizeformat(sum(r.bytes_on_purge for r in reports))} freed once purged")
    return f"\n{what}" + (f"; {skipped} skipped" if skipped else "")
