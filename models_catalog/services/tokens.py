"""API tokens: made here, stored as a SHA-256 only, the key shown to its owner exactly once.

A key is `mxr_` and 40 random letters and digits (238 bits; no `-` so a
double-click selects all of it). Anyone who reads the database (a backup, a
leaked dump) gets digests, which cannot be turned back into keys or used as
one. The `mxr_` prefix makes a leaked key easy to recognise (and to grep for).
"""
from __future__ import annotations

import hashlib
import secrets
import string
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from models_catalog.models import ApiToken

KEY_PREFIX = "mxr_"
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 40
SHOWN_PREFIX_LENGTH = 12  # "mxr_" and 8 random characters: enough to tell keys apart, useless to guess with
MAX_TOKENS_PER_USER = 20  # a script that asks for a token on every run must not grow the table forever
LAST_USED_RESOLUTION = timedelta(minutes=1)  # at most one write a minute per token, not one per request


class TokenRefused(Exception):
    """A token cannot be made; the message says why."""


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`. Returns the row and the key: the only time the key exists in clear."""
    with transaction.atomic():
        if ApiToken.objects.select_for_update().filter(user=user).count() >= MAX_TOKENS_PER_USER:
            raise TokenRefused(f"you already have {MAX_TOKENS_PER_USER} API tokens: revoke one on the API page first")
        key = KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))
        token = ApiToken.objects.create(user=user, name=name.strip()[:100], prefix=key[:SHOWN_PREFIX_LENGTH],
                                        digest=token_digest(key))
    return token, key


def api_token_authenticate(*, key: str) -> ApiToken | None:
    """The token whose key is `key`, with its user; None if there is none."""
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_token_revoke(*, user, token_id: int) -> bool:
    """Revoke one of `user`'s own tokens; False if it is not theirs (or already gone)."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    return bool(deleted)
