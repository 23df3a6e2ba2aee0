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
from utils import auth
from utils.cookies import set_token_cookies
from utils.errors import BadRequest
from utils.errors import Conflict
from utils.jwt import TokenPair
from utils.net import request_client_address
from utils.passwords import hash_password
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
    return jsonify(username=username), HTTPStatus.CREATED


def login() -> Response:
    """Check the credentials (form post or JSON) and issue an access and a refresh token."""
    username, password = read_credentials(_request_fields())
    address = request_client_address(request, get_settings().trusted_proxies)
    return token_response(auth.log_in(username, password, address))


def refresh_token() -> Response:
    """Spend the presented refresh token for a new pair in the same session."""
    return token_response(auth.rotate(g.jwt_claims))


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
    no_store(response)
    if settings.cookie_mode:
        set_token_cookies(
            response,
            pair,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
            secure=not settings.is_development,
        )
    return response


def no_store(response: Response) -> Response:
    """Mark an answer that carries tokens or token facts as never to be cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _request_fields() -> Mapping[str, Any]:
    """A JSON object body, or the form fields."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("The JSON body must be an object.")
        return body
    return request.form
