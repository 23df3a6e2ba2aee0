"""The token guard (the Go app's ``middleware.Jwt()``), as view decorators.

One function, :func:`authenticate`, finds the token (TOKEN_LOOKUP), verifies it, applies the
cookie CSRF rule and, for access tokens, asks the Redis allowlist; the decorators only choose
its mode. Claims land on ``g.jwt_claims`` and the user name on ``g.username`` (``None`` when
an optional route is called anonymously).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from flask import g
from flask import request

from global_state import get_state
from utils.cookies import REFRESH_COOKIE
from utils.errors import CsrfFailed
from utils.errors import Unauthorized
from utils.jwt import ACCESS
from utils.jwt import REFRESH
from utils.jwt import TokenSource
from utils.jwt import find_token

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def authenticate(token_type: str, *, optional: bool, changes_state: bool) -> dict[str, Any] | None:
    """Return the verified claims, ``None`` for an anonymous optional call, or raise.

    A refresh token is not checked against the allowlist here: spending it is the check, done
    atomically by the rotation script.
    """
    state = get_state()
    settings = state.settings
    sources = (
        settings.token_lookup if token_type == ACCESS else refresh_sources(settings.token_lookup)
    )
    found = find_token(request._get_current_object(), sources)  # one proxy lookup, not many
    if found is None:
        if optional:
            g.jwt_claims, g.username = None, None
            return None
        raise Unauthorized("A token is required.")
    claims = state.verifier.verify(found.token, token_type)
    if found.kind == "cookie" and (changes_state or request.method not in SAFE_METHODS):
        presented = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), claims["csrf"].encode()):
            raise CsrfFailed(f"The {CSRF_HEADER} header is missing or does not match.")
    if token_type == ACCESS and not state.store.is_token_active(
        claims["username"], claims["sid"], claims["jti"]
    ):
        raise Unauthorized("The token has been revoked.", invalid_token=True)
    g.jwt_claims, g.username = claims, claims["username"]
    return claims


@functools.cache
def refresh_sources(lookup: tuple[TokenSource, ...]) -> tuple[TokenSource, ...]:
    """TOKEN_LOOKUP with its cookies swapped for ``jwt_refresh`` (the refresh token's cookie).

    The ``jwt`` cookie holds the access token in cookie mode, so it can never be the refresh
    token; the ``jwt_refresh`` cookie is always accepted, last if TOKEN_LOOKUP has no cookie.
    """
    refresh_cookie = TokenSource("cookie", REFRESH_COOKIE)
    sources = [refresh_cookie if source.kind == "cookie" else source for source in lookup]
    if refresh_cookie not in sources:
        sources.append(refresh_cookie)
    return tuple(dict.fromkeys(sources))


def _guard(token_type: str, *, optional: bool, changes_state: bool) -> Callable:
    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            authenticate(token_type, optional=optional, changes_state=changes_state)
            return view(*args, **kwargs)

        return guarded

    return decorator


def access_required(view: Callable) -> Callable:
    """A valid, unrevoked access token is required."""
    return _guard(ACCESS, optional=False, changes_state=False)(view)


def access_required_changes_state(view: Callable) -> Callable:
    """As :func:`access_required`, and a cookie token needs the CSRF header on any method."""
    return _guard(ACCESS, optional=False, changes_state=True)(view)


def access_optional(view: Callable) -> Callable:
    """No token means anonymous; a presented bad token is still a 401 (never a downgrade)."""
    return _guard(ACCESS, optional=True, changes_state=False)(view)


def refresh_required(view: Callable) -> Callable:
    """A valid refresh token is required; refreshing always changes state."""
    return _guard(REFRESH, optional=False, changes_state=True)(view)
