"""Every error leaves as JSON ``{"code", "message"}``: never HTML, never a traceback."""

from __future__ import annotations

from http import HTTPStatus

import redis
from flask import Flask
from flask import Response
from flask import jsonify
from werkzeug.exceptions import HTTPException

from utils.errors import ApiError
from utils.errors import ServiceUnavailable
from utils.state import get_metrics

HTTP_MESSAGES = {
    HTTPStatus.BAD_REQUEST: "The request is malformed.",
    HTTPStatus.NOT_FOUND: "No such path.",
    HTTPStatus.METHOD_NOT_ALLOWED: "That method is not allowed on this path.",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The request body is too large.",
}


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


def register_error_handlers(app: Flask) -> None:
    """Map our errors, Werkzeug's HTTP errors, Redis outages and bugs to JSON."""

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> Response:
        return error_response(error.status, error.message, error.headers, error.body_fields)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response | HTTPException:
        if error.code is None or error.code < HTTPStatus.BAD_REQUEST:
            return error  # routing redirects (e.g. a missing trailing slash) stay redirects
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        message = HTTP_MESSAGES.get(error.code, f"{error.name}.")
        return error_response(error.code, message, headers)

    @app.errorhandler(redis.RedisError)
    def handle_redis_error(error: redis.RedisError) -> Response:
        app.logger.warning("Redis unavailable: %s", type(error).__name__)
        get_metrics().count_redis_error()
        unavailable = ServiceUnavailable()
        return error_response(unavailable.status, unavailable.message, unavailable.headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        app.logger.error("Unhandled %s", type(error).__name__, exc_info=error)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error.")
