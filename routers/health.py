"""Probes and the JWKS document, outside the API groups."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import health


def init_health_router() -> Blueprint:
    """``/healthz``, ``/readyz`` and ``/.well-known/jwks.json``."""
    bp = Blueprint("health", __name__)
    bp.add_url_rule("/healthz", view_func=health.healthz, methods=["GET"])
    bp.add_url_rule("/readyz", view_func=health.readyz, methods=["GET"])
    bp.add_url_rule("/.well-known/jwks.json", view_func=health.jwks, methods=["GET"])
    return bp
