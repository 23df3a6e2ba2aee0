"""Tokens: where to find them in a request, how to mint a pair, how to verify one.

Minting goes through flask-jwt-extended (its key callbacks read the app's KeySet); verifying
calls PyJWT once per token (see :class:`TokenVerifier`); finding the token is ours, because
TOKEN_LOOKUP's gin-jwt syntax includes a POST form field flask-jwt-extended has no place for.
"""

from __future__ import annotations

import binascii
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

import jwt
from flask import Request
from flask_jwt_extended import create_access_token
from flask_jwt_extended import create_refresh_token
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.utils import base64url_decode
from jwt.utils import base64url_encode

from utils.errors import Unauthorized
from utils.keys import KeySet

ACCESS = "access"
REFRESH = "refresh"
SOURCE_KINDS = ("header", "query", "cookie", "form")
SOURCE_SYNONYMS = {"postform": "form"}
BEARER = "bearer"
# A token we issue is well under 1 KB; anything far larger is refused before any parsing.
MAX_TOKEN_LENGTH = 4096


class TokenSource(NamedTuple):
    """One TOKEN_LOOKUP entry, such as ``header: Authorization``."""

    kind: str
    name: str


class FoundToken(NamedTuple):
    """A token string and the kind of place it came from (the CSRF rule needs to know)."""

    kind: str
    token: str


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


def parse_token_lookup(spec: str) -> tuple[TokenSource, ...]:
    """Parse gin-jwt's ``"header: Authorization, query: token"`` syntax; ValueError if bad."""
    sources = []
    for entry in spec.split(","):
        kind, separator, name = (part.strip() for part in entry.partition(":"))
        kind = SOURCE_SYNONYMS.get(kind.lower(), kind.lower())
        if not separator or not name or kind not in SOURCE_KINDS:
            raise ValueError(
                f"entry {entry.strip()!r} is not 'KIND: NAME' with KIND one of "
                "header, query, cookie, form, postform"
            )
        sources.append(TokenSource(kind, name))
    return tuple(sources)


def find_token(request: Request, sources: tuple[TokenSource, ...]) -> FoundToken | None:
    """Return the token from the first source that has one (gin-jwt's rule), else None.

    The query string and cookies are parsed only when the request has them: an anonymous
    call on the optional route walks every source, and parsing nothing costs nothing.
    """
    environ = request.environ
    for kind, name in sources:
        if kind == "header":
            value = _bearer_value(request.headers.get(name))
        elif kind == "query":
            value = request.args.get(name) if environ.get("QUERY_STRING") else None
        elif kind == "cookie":
            value = request.cookies.get(name) if environ.get("HTTP_COOKIE") else None
        else:
            value = request.form.get(name) if request.method == "POST" else None
        if value:
            if len(value) > MAX_TOKEN_LENGTH:
                raise Unauthorized("The token is too long.", invalid_token=True)
            return FoundToken(kind, value)
    return None


def _bearer_value(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != BEARER or not value.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", invalid_token=True)
    return value.strip()


def issue_token_pair(
    username: str, access_ttl: int, refresh_ttl: int, session_id: str | None = None
) -> TokenPair:
    """Mint an access and a refresh token sharing one session id and one CSRF value.

    ``exp`` is set explicitly from one clock reading (it overrides flask-jwt-extended's own)
    so that the Redis records can expire at exactly the same second as the tokens (SPEC:
    nothing outlives its token).
    """
    now = int(time.time())
    session_id = session_id or str(uuid.uuid4())
    csrf = secrets.token_urlsafe(24)
    access_jti, refresh_jti = str(uuid.uuid4()), str(uuid.uuid4())
    access_exp, refresh_exp = now + access_ttl, now + refresh_ttl

    def claims(jti: str, exp: int) -> dict[str, Any]:
        return {
            "username": username,
            "jti": jti,
            "uuid": jti,
            "sid": session_id,
            "csrf": csrf,
            "iat": now,
            "exp": exp,
        }

    return TokenPair(
        username=username,
        session_id=session_id,
        csrf=csrf,
        access_token=create_access_token(
            username,
            additional_claims=claims(access_jti, access_exp),
        ),
        access_jti=access_jti,
        access_exp=access_exp,
        refresh_token=create_refresh_token(
            username,
            additional_claims=claims(refresh_jti, refresh_exp),
        ),
        refresh_jti=refresh_jti,
        refresh_exp=refresh_exp,
    )


class VerifiedTokenCache:
    """A bounded per-worker memo of access tokens whose signature and claims were verified.

    A token string is immutable, so its signature, algorithm, ``iss`` and ``aud`` need checking
    once; only the clock-bound claims (``exp``, ``nbf``) are checked again on every use. The
    allowlist is never cached: revocation stays a Redis question on every request.
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


class TokenVerifier:
    """Checks presented tokens against one app's keys, issuer and audience.

    PyJWT is called directly, once per token: flask-jwt-extended's ``decode_token`` parses
    every token three times (an unverified pass for its key callback, the header, then the
    verified pass), which dominated the cost of a refresh. The rules stay RFC 8725's: only the
    configured algorithm, ``exp`` and ``iss`` required, ``aud`` required when configured and
    refused when not, ``nbf`` and ``iat`` checked.
    """

    def __init__(self, keys: KeySet, issuer: str, audience: str | None) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._algorithms = [keys.algorithm]
        self._options: dict[str, Any] = {"require": ["exp", "iat", "iss", "sub", "jti"]}
        self._decoder = _Decoder()
        self.cache = VerifiedTokenCache()

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
            key = self._keys.verification_key(
                self._decoder.unverified_header(token) if self._keys.is_asymmetric else {}
            )
            claims = self._decoder.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.", invalid_token=True) from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise Unauthorized("The token is invalid.", invalid_token=True) from None
        if not _has_required_claims(claims):
            raise Unauthorized("The token is invalid.", invalid_token=True)
        return claims


class _PreparedKeyHMAC(HMACAlgorithm):
    """PyJWT's HMAC, remembering the keys that already passed its ``prepare_key`` checks.

    PyJWT re-validates the HMAC key on every sign and verify (is it PEM, SSH or DER?), which
    cost ~37 us per token here. Our keys come from configuration, never from a token, and
    are few, so a small memo keeps the check while paying it once per key.
    """

    _MAX_KEYS = 16

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: dict[bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        key_bytes = key.encode() if isinstance(key, str) else key
        prepared = self._prepared.get(key_bytes)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._prepared) < self._MAX_KEYS:
                self._prepared[key_bytes] = prepared
        return prepared


def install_prepared_hmac(jws: PyJWS = jwt.api_jws._jws_global_obj) -> None:
    """Swap the HMAC algorithms of ``jws`` (default: the one behind ``jwt.encode``, which
    flask-jwt-extended mints with) for :class:`_PreparedKeyHMAC` (idempotent)."""
    for name, hash_alg in HMAC_HASHES.items():
        if isinstance(jws.get_algorithm_by_name(name), _PreparedKeyHMAC):
            continue
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _PreparedKeyHMAC(hash_alg))


_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


class _SegmentCheckingJWS(PyJWS):
    """PyJWS with its base64url segment check done by one regular expression.

    PyJWT 2.15 tests every character of a segment for membership in the alphabet from a
    Python generator, ~25 us for a refresh token's payload (half the cost of verifying it).
    The rules are PyJWT's, unchanged (tests compare both on random input): at most two
    ``=`` of padding and only on a whole quantum, nothing outside the base64url alphabet, no
    impossible length, and the segment must be the canonical encoding of what it decodes to.
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (
            padding > 2
            or (padding and len(segment) % 4)
            or len(stripped) % 4 == 1
            or _BASE64URL.fullmatch(stripped) is None
        ):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


class _Decoder(jwt.PyJWT):
    """PyJWT's JWT layer (claims checks untouched) over :class:`_SegmentCheckingJWS`, with the
    prepared-key HMAC algorithms."""

    def __init__(self) -> None:
        super().__init__()
        self._jws = _SegmentCheckingJWS(options=self._jws.options)
        install_prepared_hmac(self._jws)

    def unverified_header(self, token: str) -> dict[str, Any]:
        """The header, through the same segment check (only to pick the key by ``kid``)."""
        return self._jws.get_unverified_header(token)


HMAC_HASHES = {
    "HS256": HMACAlgorithm.SHA256,
    "HS384": HMACAlgorithm.SHA384,
    "HS512": HMACAlgorithm.SHA512,
}


def _has_required_claims(claims: dict[str, Any]) -> bool:
    """Our own claims, with the types the guard and the Redis store rely on."""
    return (
        isinstance(claims.get("exp"), int)
        and all(isinstance(claims.get(name), str) for name in ("username", "jti", "sid", "csrf"))
        and claims.get("type") in (ACCESS, REFRESH)
        and claims.get("sub") == claims["username"]
    )
