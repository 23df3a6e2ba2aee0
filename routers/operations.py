"""``/metrics`` and ``/openapi.json``, outside the API groups."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import operations


def init_operations_router() -> Blueprint:
    """A fresh blueprint per app."""
    bp = Blueprint("operations", __name__)
    bp.add_url_rule("/metrics", view_func=operations.metrics, methods=["GET"])
    bp.add_url_rule("/openapi.json", view_func=operations.openapi, methods=["GET"])
    return bp
