"""Cookie mode (COOKIE_MODE=true): the tokens also travel as cookies, guarded by CSRF."""

from __future__ import annotations

from flask import Response

from utils.jwt import TokenPair

ACCESS_COOKIE = "jwt"
REFRESH_COOKIE = "jwt_refresh"
CSRF_COOKIE = "csrf_token"
REFRESH_COOKIE_PATH = "/public/refresh"


def set_token_cookies(
    response: Response, pair: TokenPair, access_ttl: int, refresh_ttl: int, secure: bool
) -> None:
    """``jwt`` and ``jwt_refresh`` are HttpOnly; ``csrf_token`` is readable by scripts."""
    common = {"secure": secure, "samesite": "Lax"}
    response.set_cookie(
        ACCESS_COOKIE, pair.access_token, max_age=access_ttl, httponly=True, path="/", **common
    )
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=refresh_ttl,
        httponly=True,
        path=REFRESH_COOKIE_PATH,
        **common,
    )
    response.set_cookie(CSRF_COOKIE, pair.csrf, max_age=refresh_ttl, path="/", **common)


def clear_token_cookies(response: Response, secure: bool) -> None:
    """Expire the three cookies on the paths they were set with."""
    common = {"secure": secure, "samesite": "Lax"}
    response.delete_cookie(ACCESS_COOKIE, path="/", httponly=True, **common)
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, httponly=True, **common)
    response.delete_cookie(CSRF_COOKIE, path="/", **common)
