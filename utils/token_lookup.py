"""Where tokens travel: TOKEN_LOOKUP, the token cookies, and the cookie CSRF rule.

Every rule about where a token is found or sent lives here: the gin-jwt syntax of TOKEN_LOOKUP
(including the POST form field flask-jwt-extended has no place for), the refresh token's own
cookie, the three cookies of COOKIE_MODE, and which header must echo the ``csrf`` claim when a
token came from a cookie.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any
from typing import NamedTuple

from flask import Request
from flask import Response

from utils.errors import CsrfFailed
from utils.errors import Unauthorized
from utils.tokens import TokenPair

SOURCE_KINDS = ("header", "query", "cookie", "form")
SOURCE_SYNONYMS = {"postform": "form"}
BEARER = "bearer"
# A token we issue is well under 1 KB; anything far larger is refused before any parsing.
MAX_TOKEN_LENGTH = 4096

ACCESS_COOKIE = "jwt"
REFRESH_COOKIE = "jwt_refresh"
CSRF_COOKIE = "csrf_token"
REFRESH_COOKIE_PATH = "/public/refresh"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenSource(NamedTuple):
    """One TOKEN_LOOKUP entry, such as ``header: Authorization``."""

    kind: str
    name: str


class FoundToken(NamedTuple):
    """A token string and the kind of place it came from (the CSRF rule needs to know)."""

    kind: str
    token: str


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


def check_csrf(
    request: Request, found: FoundToken, claims: dict[str, Any], *, changes_state: bool
) -> None:
    """A token from a cookie needs ``X-CSRF-Token`` equal to its ``csrf`` claim on an unsafe
    method, or on any method of a route that ``changes_state``; raise CsrfFailed otherwise."""
    if found.kind != "cookie" or not (changes_state or request.method not in SAFE_METHODS):
        return
    presented = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(presented.encode(), claims["csrf"].encode()):
        raise CsrfFailed(f"The {CSRF_HEADER} header is missing or does not match.")


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
