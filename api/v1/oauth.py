"""OAuth 2.0 endpoints for standard client and resource-server libraries.

The token endpoint (RFC 6749 password and refresh_token grants), revocation (RFC 7009) and
introspection (RFC 7662) run the same login, rotation and session-ending flows as the
``/public`` and ``/user`` routes; only the answers take the RFCs' shapes.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import jsonify
from flask import request

from api.v1.common import caller
from api.v1.common import no_store
from utils import auth
from utils.errors import AccountDisabled
from utils.errors import BadRequest
from utils.errors import NotFound
from utils.errors import OAuthError
from utils.errors import Unauthorized
from utils.state import get_settings
from utils.state import get_tokens
from utils.tokens import ACCESS
from utils.tokens import REFRESH
from utils.users import read_credentials

TOKEN_TYPE_NAMES = {ACCESS: "access_token", REFRESH: "refresh_token"}
BASIC_CHALLENGE = 'Basic realm="flask-jwt-redis"'


def token() -> Response:
    """Issue tokens for ``grant_type=password`` or ``grant_type=refresh_token``."""
    form = request.form
    grant_type = _required("grant_type")
    try:
        if grant_type == "password":
            username, password = read_credentials(form)
            pair = auth.log_in(username, password, caller())
        elif grant_type == "refresh_token":
            claims = get_tokens().verify(_required("refresh_token"), REFRESH)
            pair = auth.rotate(claims, caller())
        else:
            raise OAuthError(
                "unsupported_grant_type", "Only the password and refresh_token grants exist."
            )
    except BadRequest as error:
        raise OAuthError("invalid_request", error.message) from None
    except Unauthorized as error:  # RFC 6749 §5.2: bad credentials or refresh token
        raise OAuthError("invalid_grant", error.message) from None
    except AccountDisabled as error:  # SPEC: a 403, whose body still names the RFC's error
        raise OAuthError("invalid_grant", error.message, error.status) from None
    settings = get_settings()
    return no_store(
        jsonify(
            access_token=pair.access_token,
            token_type="Bearer",  # noqa: S106 (a type name, not a secret)
            expires_in=settings.access_token_ttl,
            refresh_token=pair.refresh_token,
            refresh_expires_in=settings.refresh_token_ttl,
        )
    )


def revoke() -> Response:
    """End the session of the presented token; anything invalid is also a 200 (RFC 7009)."""
    claims = auth.verified_claims(_required("token"))
    if claims is not None:
        auth.revoke(claims)
    return no_store(jsonify({}))


def introspect() -> Response:
    """Tell an authenticated resource server whether a token is live, and its claims."""
    clients = get_settings().introspection_clients
    if not clients:
        raise NotFound("No such path.")
    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or not auth.is_configured_client(credentials.username, credentials.password, clients)
    ):
        raise OAuthError(
            "invalid_client",
            "Introspection needs the credentials of a configured client (HTTP Basic).",
            HTTPStatus.UNAUTHORIZED,
            {"WWW-Authenticate": BASIC_CHALLENGE},
        )
    claims = auth.live_claims(_required("token"))
    if claims is None:
        return no_store(jsonify(active=False))
    answer = {
        "active": True,
        "token_type": TOKEN_TYPE_NAMES[claims["type"]],
        **{name: claims[name] for name in ("sub", "username", "exp", "iat", "iss", "jti", "sid")},
    }
    if "aud" in claims:
        answer["aud"] = claims["aud"]
    return no_store(jsonify(answer))


def _required(name: str) -> str:
    """A present, non-empty form field, else RFC 6749's ``invalid_request``."""
    value = request.form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"Field '{name}' is required.")
    return value
