"""``/user``: the Go app's private group, every route behind an access token."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import user
from middleware.jwt import access_required
from middleware.jwt import access_required_changes_state


def init_user_router() -> Blueprint:
    """Routes that change state demand the CSRF header whenever the token came from a cookie."""
    bp = Blueprint("user", __name__, url_prefix="/user")
    bp.add_url_rule("/welcome", view_func=access_required(user.welcome), methods=["GET"])
    bp.add_url_rule(
        "/logout", view_func=access_required_changes_state(user.logout), methods=["GET", "POST"]
    )
    bp.add_url_rule(
        "/logout-all", view_func=access_required_changes_state(user.logout_all), methods=["POST"]
    )
    bp.add_url_rule(
        "/publish", view_func=access_required_changes_state(user.publish), methods=["POST"]
    )
    bp.add_url_rule("/sessions", view_func=access_required(user.sessions), methods=["GET"])
    bp.add_url_rule(
        "/sessions/<session_id>",
        view_func=access_required_changes_state(user.end_session),
        methods=["DELETE"],
    )
    bp.add_url_rule(
        "/password",
        view_func=access_required_changes_state(user.change_password),
        methods=["POST"],
    )
    return bp
