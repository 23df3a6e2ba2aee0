"""Handlers behind an access token: welcome, logout, logout-all, publish, sessions, password."""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import g
from flask import jsonify
from flask import make_response
from flask import request

from api.v1.common import caller
from api.v1.common import no_store
from api.v1.common import request_fields
from utils import audit
from utils import auth
from utils.errors import BadRequest
from utils.errors import NotFound
from utils.state import get_settings
from utils.state import get_store
from utils.token_lookup import clear_token_cookies
from utils.users import read_password_change

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


def sessions() -> Response:
    """The caller's live sessions, newest first; ``current`` marks the one of this token."""
    current = g.jwt_claims["sid"]
    listed = [
        {
            "id": session.id,
            "current": session.id == current,
            "createdAt": session.created_at,
            "refreshedAt": session.refreshed_at,
            "expiresAt": session.expires_at,
            "clientAddress": session.client_address,
            "userAgent": session.user_agent,
        }
        for session in get_store().list_sessions(g.username)
    ]
    return no_store(jsonify(sessions=listed))


def end_session(session_id: str) -> Response:
    """End one of the caller's sessions (a per-device sign-out); 404 if it is not theirs."""
    if not get_store().end_own_session(g.username, session_id):
        raise NotFound("No such session.")
    audit.audit(audit.SESSION_ENDED, g.username, session_id)
    response = jsonify(ended=session_id)
    return _without_cookies(response) if session_id == g.jwt_claims["sid"] else response


def change_password() -> Response:
    """Check the current password, store the new one and end every other session."""
    password, new_password = read_password_change(request_fields())
    ended = auth.change_password(g.jwt_claims, password, new_password, caller())
    return jsonify(endedSessions=ended)


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
