"""Audit events (SPEC "Operations"): one log line and one ``auth_events_total`` count each.

The line carries the request id and the client address put in the WSGI environ, the user
and, where known, the session id and the administrator who acted (an ``ADMIN_CLIENTS`` id, or
``cli:<login>`` on the command line, where there is no request); never a token or a password.
"""

from __future__ import annotations

from flask import has_request_context
from flask import request

from utils.state import get_audit_log
from utils.state import get_metrics

# WSGI environ keys (a dotted prefix, as PEP 3333 asks of extensions) the app sets for its audit
# lines and gunicorn's access line: the request id and client address (initialize/envelope.py),
# the authenticated user (middleware/jwt.py).
REQUEST_ID_KEY = "flask_jwt_redis.request_id"
CLIENT_KEY = "flask_jwt_redis.client"
USER_KEY = "flask_jwt_redis.user"

LOGIN_SUCCEEDED = "login_succeeded"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"
REGISTERED = "registered"
REFRESHED = "refreshed"
REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
LOGOUT = "logout"
LOGOUT_ALL = "logout_all"
SESSION_ENDED = "session_ended"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an event name)
TOKEN_REVOKED = "token_revoked"  # noqa: S105 (an event name)
REGISTER_THROTTLED = "register_throttled"
# SPEC "Administration": an operator's changes, each with ``admin``
ADMIN_USER_CREATED = "admin_user_created"
ADMIN_SESSIONS_ENDED = "admin_sessions_ended"
ADMIN_SESSION_ENDED = "admin_session_ended"
USER_DISABLED = "user_disabled"
USER_ENABLED = "user_enabled"
USER_UNLOCKED = "user_unlocked"
ADMIN_PASSWORD_SET = "admin_password_set"  # noqa: S105 (an event name)
USER_DELETED = "user_deleted"


def audit(event: str, user: str | None, sid: str | None = None, admin: str | None = None) -> None:
    """Record ``event`` for ``user`` (None: no user field), session ``sid`` and the ``admin``
    who acted in the log and the metrics."""
    environ = request.environ if has_request_context() else None  # None: the command line
    fields: dict[str, str | None] = {}
    if environ is not None:
        fields["request_id"] = environ.get(REQUEST_ID_KEY)
    if user is not None:
        fields["user"] = user
    if environ is not None:
        fields["client"] = environ.get(CLIENT_KEY)
    if sid is not None:
        fields["sid"] = sid
    if admin is not None:
        fields["admin"] = admin
    get_audit_log().info(event, **fields)
    get_metrics().count_event(event)
