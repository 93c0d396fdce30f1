"""Who owns what a CLI command registers."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def cli_owner(username: str | None):
    User = get_user_model()
    if username:
        try:
            return User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
    owner = User.objects.filter(is_superuser=True).order_by("pk").first()
    if owner is None:
        raise CommandError("no user yet: run `python manage.py ensure_admin` (make run does) or pass --user")
    return owner
