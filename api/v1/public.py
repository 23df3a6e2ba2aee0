"""Public handlers: ping, register, login, refresh and the optionally authenticated feed."""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import g
from flask import jsonify

from api.v1.common import caller
from api.v1.common import no_store
from api.v1.common import request_fields
from utils import audit
from utils import auth
from utils.errors import Conflict
from utils.errors import TooManyAttempts
from utils.passwords import hash_password
from utils.state import get_settings
from utils.state import get_store
from utils.token_lookup import set_token_cookies
from utils.tokens import TokenPair
from utils.users import check_new_password
from utils.users import read_credentials

FEED_ITEMS = (
    {"id": 1, "title": "Go jwt: the tutorial this service ports"},
    {"id": 2, "title": "gin-jwt: a token in a POST form, and one route for everyone"},
)


def ping() -> tuple[str, int, dict[str, str]]:
    """Liveness in the tutorial's words."""
    return "pong", HTTPStatus.OK, {"Content-Type": "text/plain; charset=utf-8"}


def register() -> tuple[Response, int]:
    """Create an account from a form or JSON ``username`` and ``password``."""
    username, password = read_credentials(request_fields())
    check_new_password(password)
    settings, store = get_settings(), get_store()
    attempts, retry_after = store.count_registration(
        caller().address, settings.register_window_seconds
    )
    if attempts > settings.register_max_per_address:  # each attempt costs a slow hash
        audit.audit(audit.REGISTER_THROTTLED, None)
        raise TooManyAttempts(
            retry_after, "Too many registrations from this address; try again later."
        )
    if not store.create_user(username, hash_password(password)):
        raise Conflict("That username is taken.")
    audit.audit(audit.REGISTERED, username)
    return jsonify(username=username), HTTPStatus.CREATED


def login() -> Response:
    """Check the credentials (form post or JSON) and issue an access and a refresh token."""
    username, password = read_credentials(request_fields())
    return token_response(auth.log_in(username, password, caller()))


def refresh_token() -> Response:
    """Spend the presented refresh token for a new pair in the same session."""
    return token_response(auth.rotate(g.jwt_claims, caller()))


def feed() -> Response:
    """One route for everyone: anonymous callers get ``user: null``."""
    return jsonify(user=g.username, items=list(FEED_ITEMS))


def token_response(pair: TokenPair) -> Response:
    """The tokens body (RFC 6749 §5.1: never cached); in cookie mode the tokens go only into
    HttpOnly cookies and the body carries the CSRF value instead, so that no script in the
    page, an injected one included, can read a token from an answer."""
    settings = get_settings()
    facts = {
        "tokenType": "Bearer",
        "expiresIn": settings.access_token_ttl,
        "refreshExpiresIn": settings.refresh_token_ttl,
    }
    if not settings.cookie_mode:
        tokens = {"accessToken": pair.access_token, "refreshToken": pair.refresh_token}
        return no_store(jsonify(**tokens, **facts))
    response = no_store(jsonify(**facts, csrfToken=pair.csrf))
    set_token_cookies(
        response,
        pair,
        settings.access_token_ttl,
        settings.refresh_token_ttl,
        secure=not settings.is_development,
    )
    return response
