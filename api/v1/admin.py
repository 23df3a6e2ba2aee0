"""Handlers of ``/admin/users`` (SPEC "Administration"): parse, call utils.admin, answer JSON.

The guard (middleware/admin.py) has put the client id on ``g.admin``.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import g
from flask import jsonify
from flask import request

from api.v1.common import no_store
from api.v1.common import request_fields
from utils import admin


def list_users() -> Response:
    """A page of account names; follow ``next`` until it is null."""
    cursor, limit = admin.read_page(request.args.get("cursor"), request.args.get("limit"))
    names, following = admin.list_users(cursor, limit)
    return no_store(jsonify(users=names, next=following))


def create_user() -> tuple[Response, int]:
    """Create an account by the register rules."""
    username = admin.create_user(request_fields(), g.admin)
    return jsonify(username=username), HTTPStatus.CREATED


def show_user(username: str) -> Response:
    """The account, whether it is disabled, and its live sessions."""
    view = admin.show_user(username)
    sessions = [
        {
            "id": session.id,
            "createdAt": session.created_at,
            "refreshedAt": session.refreshed_at,
            "expiresAt": session.expires_at,
            "clientAddress": session.client_address,
            "userAgent": session.user_agent,
        }
        for session in view.sessions
    ]
    return no_store(
        jsonify(
            username=view.username,
            createdAt=view.created_at,
            disabled=view.disabled,
            sessions=sessions,
        )
    )


def end_sessions(username: str) -> Response:
    """End every session of the user at once."""
    return jsonify(endedSessions=admin.end_sessions(username, g.admin))


def end_session(username: str, session_id: str) -> Response:
    """End one live session of the user."""
    admin.end_session(username, session_id, g.admin)
    return jsonify(ended=session_id)


def disable(username: str) -> Response:
    """Disable the account; every session ends at once."""
    ended = admin.disable(username, g.admin)
    return jsonify(username=username, disabled=True, endedSessions=ended)


def enable(username: str) -> Response:
    """Enable a disabled account again."""
    admin.enable(username, g.admin)
    return jsonify(username=username, disabled=False)


def unlock(username: str) -> Response:
    """Clear the user's failed-login counts."""
    admin.unlock(username, g.admin)
    return jsonify(username=username)


def set_password(username: str) -> Response:
    """Set ``newPassword``; every session of the user ends."""
    return jsonify(endedSessions=admin.set_password(username, request_fields(), g.admin))


def delete_user(username: str) -> Response:
    """Remove the account and everything it left in Redis."""
    admin.delete(username, g.admin)
    return jsonify(deleted=username)
