"""Every error leaves as JSON ``{"code", "message"}``: never HTML, never a traceback."""

from __future__ import annotations

from http import HTTPStatus

import redis
from flask import Flask
from flask import Response
from flask import jsonify
from flask import request
from werkzeug.exceptions import HTTPException

from middleware.admin import admin_visible
from routers.admin import ADMIN_PATH
from routers.oauth import OAUTH_BLUEPRINT
from utils.errors import ApiError
from utils.errors import ServiceUnavailable
from utils.redis_connection import NotReplicated
from utils.state import get_metrics

HTTP_MESSAGES = {
    HTTPStatus.BAD_REQUEST: "The request is malformed.",
    HTTPStatus.NOT_FOUND: "No such path.",
    HTTPStatus.METHOD_NOT_ALLOWED: "That method is not allowed on this path.",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The request body is too large.",
}


# SPEC: on /oauth/*, 429 and 503 are answered as elsewhere, and the body carries RFC 6749's
# fields too. §5.2 has no code for "try again later"; §4.1.2.1's temporarily_unavailable is the
# one OAuth clients know.
_TRY_LATER = (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE)
_TRY_LATER_ERROR = "temporarily_unavailable"
NOT_REPLICATED_MESSAGE = (
    "The change was made but could not be confirmed on enough Redis replicas; "
    "repeat the request shortly."
)


def _oauth_fields(status: int, message: str) -> dict[str, str] | None:
    if request.blueprint != OAUTH_BLUEPRINT or status not in _TRY_LATER:
        return None
    return {"error": _TRY_LATER_ERROR, "error_description": message}


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    body_fields: dict[str, str] | None = None,
) -> Response:
    """The one error shape of SPEC's "Errors" section (OAuth errors add their own fields)."""
    response = jsonify(code=int(status), message=message, **(body_fields or {}))
    response.status_code = int(status)
    response.headers.update(headers or {})
    return response


def _hidden_admin_path() -> bool:
    """A 405 would tell whoever may not see ``/admin`` that the path exists (SPEC: 404 as
    for an unknown path)."""
    return request.path.startswith(ADMIN_PATH) and not admin_visible()


def register_error_handlers(app: Flask) -> None:
    """Map our errors, Werkzeug's HTTP errors, Redis outages and bugs to JSON."""

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> Response:
        fields = error.body_fields or _oauth_fields(error.status, error.message)
        return error_response(error.status, error.message, error.headers, fields)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response | HTTPException:
        if error.code is None or error.code < HTTPStatus.BAD_REQUEST:
            return error  # routing redirects (e.g. a missing trailing slash) stay redirects
        if error.code == HTTPStatus.METHOD_NOT_ALLOWED and _hidden_admin_path():
            return error_response(HTTPStatus.NOT_FOUND, HTTP_MESSAGES[HTTPStatus.NOT_FOUND])
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        message = HTTP_MESSAGES.get(error.code, f"{error.name}.")
        return error_response(error.code, message, headers)

    @app.errorhandler(NotReplicated)
    def handle_not_replicated(error: NotReplicated) -> Response:
        app.logger.warning("Redis replicas behind: %s", error)
        get_metrics().count_wait_timeout()
        return _unavailable(ServiceUnavailable(NOT_REPLICATED_MESSAGE))

    @app.errorhandler(redis.RedisError)
    def handle_redis_error(error: redis.RedisError) -> Response:
        app.logger.warning("Redis unavailable: %s", type(error).__name__)
        get_metrics().count_redis_error()
        return _unavailable(ServiceUnavailable())

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        app.logger.error("Unhandled %s", type(error).__name__, exc_info=error)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error.")


def _unavailable(unavailable: ServiceUnavailable) -> Response:
    return error_response(
        unavailable.status,
        unavailable.message,
        unavailable.headers,
        _oauth_fields(unavailable.status, unavailable.message),
    )
