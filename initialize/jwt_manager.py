"""flask-jwt-extended mints the tokens; its key callbacks read the app's own KeySet.

Verification does not go through it (see ``utils.jwt.TokenVerifier``).

The manager is one object for every app (it stores no app), so the callbacks look the keys up
through ``current_app`` each time: tests build many apps with different keys side by side.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask_jwt_extended import JWTManager

from global_state import get_settings
from initialize.config import Settings
from utils.jwt import install_prepared_hmac

jwt_manager = JWTManager()


@jwt_manager.encode_key_loader
def _signing_key(identity: Any) -> Any:
    return get_settings().keys.signing_key


@jwt_manager.additional_headers_loader
def _kid_header(identity: Any) -> dict[str, str]:
    kid = get_settings().keys.current_kid
    return {"kid": kid} if kid else {}


def init_jwt(app: Flask, settings: Settings) -> None:
    """Set flask-jwt-extended's options from the validated settings and bind the manager."""
    app.config.update(
        JWT_ALGORITHM=settings.jwt_algorithm,
        JWT_ENCODE_ISSUER=settings.jwt_issuer,
        JWT_ENCODE_AUDIENCE=settings.jwt_audience,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.refresh_token_ttl),
        # We find tokens ourselves (TOKEN_LOOKUP) and mint our own csrf claim, so its CSRF
        # value (a uuid4 per token, then overwritten by ours) is not wanted.
        JWT_TOKEN_LOCATION=["headers"],
        JWT_COOKIE_CSRF_PROTECT=False,
        # nbf would always equal iat; without it tokens are shorter to send and to check.
        JWT_ENCODE_NBF=False,
    )
    jwt_manager.init_app(app)
    install_prepared_hmac()
