from django.core.management.base import CommandError

from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.services.huggingface import hf_repo_index
from workers.sources.huggingface import HuggingFaceError


class Command(PipeSafeCommand):
    help = "Index a Hugging Face repo (every file's sha256 / git sha1) so local copies are identified."

    def add_arguments(self, parser):
        parser.add_argument("repo_id")
        parser.add_argument("--revision")
        parser.add_argument("--repo-type", choices=["model", "dataset"], default="model")

    def handle(self, *args, repo_id, revision, repo_type, **options):
        try:
            version = hf_repo_index(repo_id=repo_id, revision=revision, repo_type=repo_type)
        except HuggingFaceError as exc:
            raise CommandError(f"{repo_id}: {exc}") from None
        files = version.files.all()
        lfs = sum(1 for f in files if f.sha256)
        self.stdout.write(f"{repo_id} @ {version.external_id}: {len(files)} files ({lfs} with a SHA256)")
