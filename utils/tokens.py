"""Tokens: one key set and one configuration, for minting and for verifying.

:class:`Tokens` is built once per app. It mints through flask-jwt-extended, the project's token
library, whose per-app manager takes the signing key and ``kid`` from it; it verifies with
PyJWT's public API directly, once per token, because flask-jwt-extended's ``decode_token``
parses every token three times (an unverified pass for its key callback, the header, then the
verified pass), which dominated the cost of a refresh. Both sides use the same algorithm,
keys, issuer and audience, from this one object.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from flask import Flask
from flask_jwt_extended import JWTManager
from flask_jwt_extended import create_access_token
from flask_jwt_extended import create_refresh_token

from utils.errors import Unauthorized
from utils.keys import KeySet

ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True)
class TokenPair:
    """An access and a refresh token minted together for one session."""

    username: str
    session_id: str
    csrf: str
    access_token: str
    access_jti: str
    access_exp: int
    refresh_token: str
    refresh_jti: str
    refresh_exp: int


class VerifiedTokenCache:
    """A bounded per-worker memo of access tokens whose signature and claims were verified.

    A token string is immutable, so its signature, algorithm, ``iss`` and ``aud`` need checking
    once; only the clock-bound claims (``exp``, ``nbf``) are checked again on every use. Whether
    the token is still allowed (not revoked) is not this memo's business: that is the allowlist
    check, which asks Redis or, on a standalone Redis, :mod:`utils.allowlist_cache` while Redis
    reports no change to the token's keys.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> dict[str, Any] | None:
        """The claims if ``token`` was verified before and is still within its time window."""
        claims = self._entries.get(token)
        if claims is None or not claims.get("nbf", 0) <= now < claims["exp"]:
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        """Remember a verified token, evicting the oldest entry when full."""
        with self._lock:
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = claims


class Tokens:
    """Mints token pairs and verifies presented tokens with one app's keys and settings.

    The rules are RFC 8725's: only the configured algorithm, ``exp``, ``iat``, ``iss``,
    ``sub`` and ``jti`` required, ``aud`` required when configured and refused when not.
    """

    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        audience: str | None,
        access_ttl: int,
        refresh_ttl: int,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.cache = VerifiedTokenCache()
        self._decoder = jwt.PyJWT()
        self._algorithms = [keys.algorithm]
        self._options: dict[str, Any] = {"require": ["exp", "iat", "iss", "sub", "jti"]}

    def init_app(self, app: Flask) -> None:
        """Give ``app`` its own flask-jwt-extended manager, minting with these keys."""
        app.config.update(
            JWT_ALGORITHM=self.keys.algorithm,
            JWT_ENCODE_ISSUER=self.issuer,
            JWT_ENCODE_AUDIENCE=self.audience,
            JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=self.access_ttl),
            JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=self.refresh_ttl),
            # Tokens are found by utils.token_lookup (TOKEN_LOOKUP has a POST form field, which
            # flask-jwt-extended has no place for), and one csrf claim is shared by a pair.
            JWT_TOKEN_LOCATION=["headers"],
            JWT_COOKIE_CSRF_PROTECT=False,
            # nbf would always equal iat; without it tokens are shorter to send and to check.
            JWT_ENCODE_NBF=False,
        )
        manager = JWTManager()
        manager.encode_key_loader(self._signing_key)
        manager.additional_headers_loader(self._kid_header)
        manager.init_app(app)

    def _signing_key(self, identity: Any) -> Any:
        return self.keys.signing_key

    def _kid_header(self, identity: Any) -> dict[str, str]:
        return {"kid": self.keys.current_kid} if self.keys.current_kid else {}

    def issue_pair(self, username: str, session_id: str | None = None) -> TokenPair:
        """Mint an access and a refresh token sharing one session id and one CSRF value.

        flask-jwt-extended sets ``iat`` and ``exp``; ``exp`` is read back from each token, so
        that its Redis record expires at exactly the same second (SPEC: nothing outlives its
        token). The ``jti`` is chosen here only because SPEC wants it under ``uuid`` too.
        """
        session_id = session_id or str(uuid.uuid4())
        csrf = secrets.token_urlsafe(24)
        access_jti, refresh_jti = str(uuid.uuid4()), str(uuid.uuid4())

        def claims(jti: str) -> dict[str, str]:
            return {"username": username, "jti": jti, "uuid": jti, "sid": session_id, "csrf": csrf}

        access_token = create_access_token(username, additional_claims=claims(access_jti))
        refresh_token = create_refresh_token(username, additional_claims=claims(refresh_jti))
        return TokenPair(
            username=username,
            session_id=session_id,
            csrf=csrf,
            access_token=access_token,
            access_jti=access_jti,
            access_exp=self._minted_expiry(access_token),
            refresh_token=refresh_token,
            refresh_jti=refresh_jti,
            refresh_exp=self._minted_expiry(refresh_token),
        )

    @staticmethod
    def _minted_expiry(token: str) -> int:
        """The ``exp`` of a token this object has just signed: its payload segment, read as
        it was written (nothing to check; PyJWT's decode would check every character again)."""
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]

    def verify(self, token: str, expected_type: str) -> dict[str, Any]:
        """Return the claims of a valid token of ``expected_type``, else raise Unauthorized.

        Whether the token was revoked is the allowlist's question, not this method's.
        """
        claims = self.verify_any(token)
        if claims["type"] != expected_type:
            raise Unauthorized(f"An {expected_type} token is required.", invalid_token=True)
        return claims

    def verify_any(self, token: str) -> dict[str, Any]:
        """As :meth:`verify`, for a token of either type (introspection and revocation)."""
        claims = self.cache.get(token, time.time())
        if claims is None:
            claims = self._verify_signature_and_claims(token)
            if claims["type"] == ACCESS:  # a refresh token is spent once: caching it would
                self.cache.put(token, claims)  # only push access tokens out
        return claims

    def _verify_signature_and_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token) if self.keys.is_asymmetric else {}
            claims = self._decoder.decode(
                token,
                self.keys.verification_key(header),
                algorithms=self._algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.", invalid_token=True) from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise Unauthorized("The token is invalid.", invalid_token=True) from None
        if not _has_required_claims(claims):
            raise Unauthorized("The token is invalid.", invalid_token=True)
        return claims


def _has_required_claims(claims: dict[str, Any]) -> bool:
    """Our own claims, with the types the guard and the Redis store rely on."""
    return (
        isinstance(claims.get("exp"), int)
        and all(isinstance(claims.get(name), str) for name in ("username", "jti", "sid", "csrf"))
        and claims.get("type") in (ACCESS, REFRESH)
        and claims.get("sub") == claims["username"]
    )
