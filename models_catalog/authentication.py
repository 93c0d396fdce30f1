"""`Authorization: Token <key>` against hashed ApiToken rows (DRF's authtoken keeps keys in clear)."""
from __future__ import annotations

from rest_framework import authentication, exceptions

from models_catalog.services.tokens import api_token_authenticate


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """DRF's header parsing and 401 challenge (`WWW-Authenticate: Token`); the lookup goes by digest."""

    def authenticate_credentials(self, key):
        token = api_token_authenticate(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
