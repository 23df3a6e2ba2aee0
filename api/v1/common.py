"""What several handlers read from a request or add to a response."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response
from flask import request

from utils.errors import BadRequest
from utils.net import Caller
from utils.net import request_client
from utils.state import get_settings


def caller() -> Caller:
    """The calling client's address (proxy-aware, as for the login counter) and user agent."""
    return request_client(request, get_settings().trusted_proxies)


def request_fields() -> Mapping[str, Any]:
    """A JSON object body, or the form fields."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("The JSON body must be an object.")
        return body
    return request.form


def no_store(response: Response) -> Response:
    """Mark an answer that carries tokens or token facts as never to be cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
