"""Audit events (SPEC "Operations"): one log line and one ``auth_events_total`` count each.

The line carries the request id and the client address put in the WSGI environ, the user
and, where known, the session id; never a token or a password.
"""

from __future__ import annotations

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


def audit(event: str, user: str | None, sid: str | None = None) -> None:
    """Record ``event`` for ``user`` (None: no user field) and session ``sid`` in the log and
    the metrics."""
    environ = request.environ
    fields = {"request_id": environ.get(REQUEST_ID_KEY)}
    if user is not None:
        fields["user"] = user
    fields["client"] = environ.get(CLIENT_KEY)
    if sid is not None:
        fields["sid"] = sid
    get_audit_log().info(event, **fields)
    get_metrics().count_event(event)
