"""Handlers behind an access token: welcome, logout, logout-all and publish."""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import g
from flask import jsonify
from flask import make_response
from flask import request

from global_state import get_settings
from global_state import get_store
from utils import audit
from utils.cookies import clear_token_cookies
from utils.errors import BadRequest

TEXT = {"Content-Type": "text/plain; charset=utf-8"}
MAX_TITLE_LENGTH = 200
UPLOAD_CHUNK_BYTES = 64 * 1024


def welcome() -> tuple[str, int, dict[str, str]]:
    """Greet the token's user, as the tutorial does."""
    return f"Welcome ! {g.username}", HTTPStatus.OK, TEXT


def logout() -> Response:
    """End this session: its access and refresh tokens stop working at once."""
    get_store().end_session(g.username, g.jwt_claims["sid"])
    audit.audit(audit.LOGOUT, g.username, g.jwt_claims["sid"])
    return _without_cookies(make_response(("Logout success", HTTPStatus.OK, TEXT)))


def logout_all() -> Response:
    """End every session of this user."""
    ended = get_store().end_all_sessions(g.username)
    audit.audit(audit.LOGOUT_ALL, g.username)
    return _without_cookies(jsonify(message="All sessions ended", sessions=ended))


def publish() -> Response:
    """The gin-jwt upload case: multipart ``title`` and optional file ``data``."""
    title = request.form.get("title", "").strip()
    if not title or len(title) > MAX_TITLE_LENGTH:
        raise BadRequest(f"Field 'title' is required (at most {MAX_TITLE_LENGTH} characters).")
    upload = request.files.get("data")
    size = 0
    if upload is not None:
        while chunk := upload.stream.read(UPLOAD_CHUNK_BYTES):
            size += len(chunk)
    return jsonify(user=g.username, title=title, bytes=size)


def _without_cookies(response: Response) -> Response:
    settings = get_settings()
    if settings.cookie_mode:
        clear_token_cookies(response, secure=not settings.is_development)
    return response
