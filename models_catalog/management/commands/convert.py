import json
import sys

from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.management.commands._owner import cli_owner
from models_catalog.services.convert import checkpoint_convert
from models_catalog.services.paths import PathRefused
from workers.convert import (
    DTYPE_CHOICES, ConvertError, describe_refusal, describe_result, plain_progress, terminal_progress,
)


class Command(PipeSafeCommand):
    help = ("Convert a pickle checkpoint (.ckpt/.pt/.pth/.bin, legacy torch, a bare pickle, .npz) to safetensors "
            "without ever running it: refused unless its scan verdict is safe; the output is verified, written "
            "under your model roots (default: beside the source) and registered like any file.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="the checkpoint, under your model roots")
        parser.add_argument("--out", help="the output file, under your model roots (default: beside the source, "
                                          "NAME.safetensors, or NAME.fp16.safetensors for a cast)")
        parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="keep",
                            help="keep the dtypes, or cast floating tensors to fp16 / bf16 (round to nearest even)")
        original = parser.add_mutually_exclusive_group()
        original.add_argument("--keep-original", dest="original", action="store_const", const="keep",
                              help="leave the source where it is (the default)")
        original.add_argument("--quarantine-original", dest="original", action="store_const", const="quarantine",
                              help="once the output is verified, move the source to the quarantine")
        parser.set_defaults(original="keep")
        parser.add_argument("--allow-suspicious", action="store_true",
                            help="convert a file whose verdict is suspicious (what lies outside the allowlist is "
                                 "dropped and listed); dangerous and unreadable files are never converted")
        parser.add_argument("--user", help="owner (default: the first admin)")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the result as JSON")

    def handle(self, *args, path, out, dtype, original, allow_suspicious, user, as_json, **options):
        owner = cli_owner(user)
        close = None
        if sys.stderr.isatty():
            progress, close = terminal_progress(sys.stderr)
        else:
            progress = plain_progress(self.stderr)
        try:
            outcome = checkpoint_convert(owner=owner, path=path, out=out, dtype=dtype, allow_suspicious=allow_suspicious,
                                         original=original, progress=progress)
        except ConvertError as exc:
            raise CommandError("\n".join(describe_refusal(exc))) from None
        except PathRefused as exc:
            raise CommandError(str(exc)) from None
        finally:
            if close:
                close()
        if as_json:
            self.stdout.write(json.dumps({**outcome.result.to_json(), "registered": outcome.output_file.pk
                                     if outcome.output_file else None, "quarantined": outcome.quarantined,
                                     "quarantine_error": outcome.quarantine_error}, indent=2))
            return
        for line in describe_result(outcome.result):
            self.stdout.write(line)
        if outcome.output_file is not None:
            self.stdout.write(f"registered as file {outcome.output_file.pk}: it is hashed and matched to its source "
                              "like any file (`manage.py inspect` or the web page say what it is)")
        if outcome.queue_error:
            self.stderr.write(self.style.WARNING(f"{outcome.queue_error}: the output is registered and is hashed "
                                                 "once the queue is back"))
        if outcome.quarantined:
            self.stdout.write("the original was moved to the quarantine")
        elif outcome.quarantine_error:
            self.stderr.write(outcome.quarantine_error)
