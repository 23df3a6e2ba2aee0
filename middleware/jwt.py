"""The token guard (the Go app's ``middleware.Jwt()``), as view decorators.

One function, :func:`authenticate`, finds the token (TOKEN_LOOKUP), verifies it, applies the
cookie CSRF rule and, for access tokens, asks the Redis allowlist; the decorators only choose
its mode. Claims land on ``g.jwt_claims`` and the user name on ``g.username`` (``None`` when
an optional route is called anonymously).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import g
from flask import request

from utils.audit import USER_KEY
from utils.errors import Unauthorized
from utils.state import get_state
from utils.token_lookup import check_csrf
from utils.token_lookup import find_token
from utils.token_lookup import refresh_sources
from utils.tokens import ACCESS
from utils.tokens import REFRESH


def authenticate(token_type: str, *, optional: bool, changes_state: bool) -> dict[str, Any] | None:
    """Return the verified claims, ``None`` for an anonymous optional call, or raise.

    A refresh token is not checked against the allowlist here: spending it is the check, done
    atomically by the rotation script.
    """
    state = get_state()
    lookup = state.settings.token_lookup
    sources = lookup if token_type == ACCESS else refresh_sources(lookup)
    found = find_token(request, sources)
    if found is None:
        if optional:
            g.jwt_claims, g.username = None, None
            return None
        raise Unauthorized("A token is required.")
    claims = state.tokens.verify(found.token, token_type)
    check_csrf(request, found, claims, changes_state=changes_state)
    if token_type == ACCESS and not state.store.is_token_active(
        claims["username"], claims["sid"], claims["jti"]
    ):
        raise Unauthorized("The token has been revoked.", invalid_token=True)
    g.jwt_claims, g.username = claims, claims["username"]
    request.environ[USER_KEY] = g.username  # for gunicorn's access line
    return claims


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
