"""Push hashes (never file contents) from a machine that holds model files to a ModelXRef server (PURE).

    python -m workers.push_client DIR... --server URL --token T [--host NAME]
        [--state FILE] [--cache FILE] [--batch 200] [--no-analyse]

Needs only requirements.txt: no database, no Django. Files are found by
content (workers.discovery), hashed by the same engine as the server's
workers (with the same identity-keyed HashCache), analysed without executing
anything (workers.modelfiles.analyse), and sent in batches.

Resuming: a JSON state file remembers, per path, the identity (device, inode,
size, mtime_ns) and sha256 the server ACCEPTED. It is rewritten atomically
after each accepted batch, so a re-run sends only new or changed files and an
interrupted run continues where it stopped. Sending a record twice is
harmless: the server stores by (owner, host, path).

A diffusers folder is pushed as ONE folder record ("kind": "folder", its
FolderHashes with the digest and every weight file), as the server stores a
registered folder; the state remembers it by a digest of its members'
identities, so a changed, added or removed weight file sends it again.

This module is the command line; the work is in workers.push: state (what
the server has accepted), collect (finding, hashing, analysing), send (talking
to the server, the push), report and defaults.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from workers.push.defaults import DEFAULT_BATCH, MAX_BATCH
from workers.push.report import PushError, PushReport
from workers.push.send import push_paths


def build_parser(prog: str = "python -m workers.push_client") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Send the hashes (never the contents) of the model files under PATH to a ModelXRef server.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders; folders are searched by content")
    parser.add_argument("--server", default=os.environ.get("MODELXREF_SERVER"),
                        help="the ModelXRef site, e.g. https://modelxref.example.org (or MODELXREF_SERVER)")
    parser.add_argument("--token", default=os.environ.get("MODELXREF_TOKEN"),
                        help="API token of your account (or MODELXREF_TOKEN)")
    parser.add_argument("--host", help="name this machine is stored under (default: its host name)")
    parser.add_argument("--state", help="push state file (default: ~/.cache/modelxref/push-state-<server>.json)")
    parser.add_argument("--cache", help="hash cache (default: $MODELXREF_PUSH_CACHE or ~/.cache/modelxref/hash-cache.sqlite3)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"records per request, 1-{MAX_BATCH}")
    parser.add_argument("--no-analyse", dest="analyse", action="store_false",
                        help="send hashes and format only: no safety scan or tensor fingerprint")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (they are shown only on a terminal anyway)")


def run(args: argparse.Namespace, *, out: Any = None, err: Any = None) -> int:
    """Run a parsed command line; returns the exit status (0 all pushed, 1 some failed, 2 could not push)."""
    out = out or sys.stdout
    err = err or sys.stderr

    def say(text: str) -> None:
        _write_line(err, text)

    if not args.server:
        say("push: --server is required (or set MODELXREF_SERVER)")
        return 2
    if not args.token:
        say("push: --token is required (or set MODELXREF_TOKEN)")
        return 2
    try:
        report = push_paths(
            args.paths, server=args.server, token=args.token, host=args.host, state_path=args.state,
            cache=args.cache, batch_size=args.batch, analyse=args.analyse, on_message=say,
            progress=args.progress and _is_terminal(err),
        )
    except PushError as exc:
        say(f"push: {exc}")
        if exc.report is not None:
            _write_line(out, summary(exc.report))
        return 2
    except KeyboardInterrupt:
        say("push: interrupted; accepted batches are remembered, run again to continue")
        return 130
    _write_line(out, summary(report))
    return 0 if report.ok else 1


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _write_line(stream: Any, text: str) -> None:
    # One write per line: Django's OutputWrapper adds a newline to every write.
    stream.write(text + "\n")
    stream.flush()


def summary(report: PushReport) -> str:
    return (
        f"{report.sent} sent ({report.created} created, {report.updated} updated, {report.unchanged} unchanged), "
        f"{report.skipped_unchanged} skipped as already pushed, {len(report.failed)} failed, "
        f"{report.requests} request(s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
