"""``/public``: the Go app's public group, plus register and the optional-auth feed."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import public
from middleware.jwt import access_optional
from middleware.jwt import refresh_required


def init_public_router() -> Blueprint:
    """A fresh blueprint per app, so tests can build many apps."""
    bp = Blueprint("public", __name__, url_prefix="/public")
    bp.add_url_rule("/ping", view_func=public.ping, methods=["GET"])
    bp.add_url_rule("/register", view_func=public.register, methods=["POST"])
    bp.add_url_rule("/login", view_func=public.login, methods=["POST"])
    bp.add_url_rule(
        "/refresh", view_func=refresh_required(public.refresh_token), methods=["GET", "POST"]
    )
    bp.add_url_rule("/feed", view_func=access_optional(public.feed), methods=["GET"])
    return bp
