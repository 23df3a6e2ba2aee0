"""Public handlers: ping, register, login, refresh and the optionally authenticated feed."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Response
from flask import g
from flask import jsonify
from flask import request

from global_state import get_settings
from global_state import get_store
from utils import audit
from utils.cookies import set_token_cookies
from utils.errors import BadRequest
from utils.errors import Conflict
from utils.errors import TooManyAttempts
from utils.errors import Unauthorized
from utils.jwt import TokenPair
from utils.jwt import issue_token_pair
from utils.net import client_address
from utils.passwords import hash_password
from utils.passwords import verify_password
from utils.redis import Rotation
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
    username, password = read_credentials(_request_fields())
    check_new_password(password)
    if not get_store().create_user(username, hash_password(password)):
        raise Conflict("That username is taken.")
    audit.audit(audit.REGISTERED, username)
    return jsonify(username=username), HTTPStatus.CREATED


def login() -> Response:
    """Check the credentials (form post or JSON) and issue an access and a refresh token."""
    username, password = read_credentials(_request_fields())
    settings, store = get_settings(), get_store()
    address = client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )
    attempt = store.begin_login(username, address, settings.login_lock_seconds)
    if attempt.attempts > settings.login_max_failures:
        audit.audit(audit.LOGIN_LOCKED, username)
        raise TooManyAttempts(attempt.retry_after)
    if not verify_password(attempt.password_hash, password):
        audit.audit(audit.LOGIN_FAILED, username)
        raise Unauthorized("Please provide valid login details.")
    pair = issue_token_pair(username, settings.access_token_ttl, settings.refresh_token_ttl)
    store.record_tokens(pair, client_address=address)
    audit.audit(audit.LOGIN_SUCCEEDED, username, pair.session_id)
    return token_response(pair)


def refresh_token() -> Response:
    """Spend the presented refresh token for a new pair in the same session."""
    claims, settings = g.jwt_claims, get_settings()
    pair = issue_token_pair(
        claims["username"],
        settings.access_token_ttl,
        settings.refresh_token_ttl,
        session_id=claims["sid"],
    )
    outcome = get_store().rotate_refresh_token(claims["jti"], claims["exp"], pair)
    if outcome is Rotation.REUSED:
        audit.audit(audit.REFRESH_REUSE_DETECTED, claims["username"], claims["sid"])
        raise Unauthorized(
            "The refresh token was already used; its session has been ended.", invalid_token=True
        )
    if outcome is Rotation.REVOKED:
        raise Unauthorized("The token has been revoked.", invalid_token=True)
    audit.audit(audit.REFRESHED, claims["username"], claims["sid"])
    return token_response(pair)


def feed() -> Response:
    """One route for everyone: anonymous callers get ``user: null``."""
    return jsonify(user=g.username, items=list(FEED_ITEMS))


def token_response(pair: TokenPair) -> Response:
    """The tokens body (RFC 6749 §5.1: never cached), plus cookies in cookie mode."""
    settings = get_settings()
    response = jsonify(
        accessToken=pair.access_token,
        refreshToken=pair.refresh_token,
        tokenType="Bearer",
        expiresIn=settings.access_token_ttl,
        refreshExpiresIn=settings.refresh_token_ttl,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    if settings.cookie_mode:
        set_token_cookies(
            response,
            pair,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
            secure=not settings.is_development,
        )
    return response


def _request_fields() -> Mapping[str, Any]:
    """A JSON object body, or the form fields."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("The JSON body must be an object.")
        return body
    return request.form
