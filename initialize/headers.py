"""Headers on every response: security defaults (added by initialize/envelope.py), and CORS for
the configured origins."""

from __future__ import annotations

from flask import Flask
from flask import Response
from flask import request

from utils.settings import Settings
from utils.token_lookup import CSRF_HEADER

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
CORS_ALLOWED_HEADERS = f"Authorization, Content-Type, {CSRF_HEADER}"
CORS_MAX_AGE_SECONDS = "600"


def register_cors(app: Flask, settings: Settings) -> None:
    """CORS headers for the configured origins, in an ``after_request`` hook (it also runs for
    error responses); no hook at all when CORS_ORIGINS is empty."""
    allowed_origins = frozenset(settings.cors_origins)
    if not allowed_origins:
        return

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        _add_cors_headers(response, allowed_origins)
        return response


def _add_cors_headers(response: Response, allowed_origins: frozenset[str]) -> None:
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin not in allowed_origins:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = response.headers.get(
            "Allow", "GET, POST, OPTIONS"
        )
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE_SECONDS
    else:
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, WWW-Authenticate"
