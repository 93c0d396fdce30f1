import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from tqdm import tqdm

from models_catalog.management.commands._base import PipeSafeCommand
from workers.hash_cache import hash_file_cached
from models_catalog.services.hashing import hash_cache
from workers.sources.hf_verify import VerifyError, exit_status, verify_local_dir
from workers.sources.huggingface import HuggingFaceError, index_repo


class Command(PipeSafeCommand):
    help = ("Check a local download folder against the Hub: matched, mismatched, missing and extra files. "
            "Exit status: 0 all present files match, 1 mismatches, 2 only missing files.")

    def add_arguments(self, parser):
        parser.add_argument("repo_id")
        parser.add_argument("local_dir")
        parser.add_argument("--revision")
        parser.add_argument("--repo-type", choices=["model", "dataset"], default="model")
        parser.add_argument("--state", help="state file (default: <data dir>/verify/<repo>.json)")

    def handle(self, *args, repo_id, local_dir, revision, repo_type, state, **options):
        try:
            index = index_repo(repo_id=repo_id, revision=revision, repo_type=repo_type,
                               endpoint=settings.HF_ENDPOINT or None, token=settings.HF_TOKEN or None)
        except HuggingFaceError as exc:
            raise CommandError(f"{repo_id}: {exc}") from None
        state_path = Path(state) if state else settings.DATA_DIR / "verify" / f"{repo_type}--{repo_id.replace('/', '--')}.json"
        state_path.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=0, unit="B", unit_scale=True, desc="verifying", file=sys.stderr)

        def progress(done, total, current):
            bar.total, bar.n = total, done
            bar.set_postfix_str(str(current)[-40:], refresh=False)
            bar.refresh()

        def sha256_of(path, on_bytes=None):
            # The shared engine and its cache: a file hashed before costs a stat.
            return hash_file_cached(Path(path), cache=hash_cache())[0].sha256

        try:
            report = verify_local_dir(index=index, local_dir=local_dir, state_path=state_path, progress=progress, sha256_of=sha256_of)
        except VerifyError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        self.stdout.write(f"{repo_id} @ {index.revision}")
        self.stdout.write(f"matched {len(report.matched)}, mismatched {len(report.mismatched)}, "
                          f"missing {len(report.missing)}, extra {len(report.extra)}, not re-hashed {report.skipped_rehash}")
        for m in report.mismatched:
            self.stdout.write(self.style.ERROR(f"  MISMATCH {m.path}: {m.reason} expected {m.expected} got {m.actual}"))
        for path in report.missing:
            self.stdout.write(self.style.WARNING(f"  missing  {path}"))
        for path in report.extra:
            self.stdout.write(f"  extra    {path}")
        for r in report.refused:
            self.stdout.write(self.style.ERROR(f"  refused  {r.path}: {r.reason}"))
        status = exit_status(report)
        if status:
            sys.exit(status)
