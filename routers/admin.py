"""``/admin/users``: account and session administration behind the admin guard."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import admin
from middleware.admin import require_admin

ADMIN_BLUEPRINT = "admin"
ADMIN_PATH = "/admin/"


def init_admin_router() -> Blueprint:
    """The ten routes of SPEC "Administration"; the guard runs before each."""
    bp = Blueprint(ADMIN_BLUEPRINT, __name__, url_prefix=f"{ADMIN_PATH}users")
    bp.before_request(require_admin)
    bp.add_url_rule("", view_func=admin.list_users, methods=["GET"])
    bp.add_url_rule("", view_func=admin.create_user, methods=["POST"])
    bp.add_url_rule("/<username>", view_func=admin.show_user, methods=["GET"])
    bp.add_url_rule("/<username>", view_func=admin.delete_user, methods=["DELETE"])
    bp.add_url_rule("/<username>/sessions", view_func=admin.end_sessions, methods=["DELETE"])
    bp.add_url_rule(
        "/<username>/sessions/<session_id>", view_func=admin.end_session, methods=["DELETE"]
    )
    bp.add_url_rule("/<username>/disable", view_func=admin.disable, methods=["POST"])
    bp.add_url_rule("/<username>/enable", view_func=admin.enable, methods=["POST"])
    bp.add_url_rule("/<username>/unlock", view_func=admin.unlock, methods=["POST"])
    bp.add_url_rule("/<username>/password", view_func=admin.set_password, methods=["POST"])
    return bp
