import secrets

from django.conf import settings
from django.contrib.auth import get_user_model

from models_catalog.management.commands._base import PipeSafeCommand


class Command(PipeSafeCommand):
    help = "On a fresh install, create the 'admin' user with a random password saved under the data dir."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        path = settings.DATA_DIR / "admin-password.txt"
        path.write_text(password + "\n")
        path.chmod(0o600)
        self.stdout.write(f"Created user 'admin' with password {password} (also saved in {path})")
