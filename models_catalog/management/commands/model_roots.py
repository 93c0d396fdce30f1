"""`manage.py model_roots`: which folders may be registered in place (`make run` prints it at start-up)."""
from models_catalog.management.commands._base import PipeSafeCommand
from models_catalog.services.paths import ROOTS_EXAMPLE, model_roots, printable, root_problem


class Command(PipeSafeCommand):
    help = "List the model roots (MODELXREF_MODEL_ROOTS): the folders whose files may be registered in place."

    def handle(self, *args, **options):
        roots = model_roots()
        if not roots:
            self.stdout.write(self.style.WARNING(
                "No model roots are configured, so registering files in place is off (uploads and push still work)."))
            self.stdout.write(f"  To register a folder, start with it:  {ROOTS_EXAMPLE}")
            return
        self.stdout.write("Model roots (files under these may be registered in place):")
        for root in roots:
            problem = root_problem(root)
            line = f"  {printable(root)}" + (f"  (unusable: {problem})" if problem else "")
            self.stdout.write(self.style.WARNING(line) if problem else line)
