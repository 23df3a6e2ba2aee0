"""``/oauth``: the RFC 6749 token, RFC 7009 revocation and RFC 7662 introspection endpoints."""

from __future__ import annotations

from flask import Blueprint

from api.v1 import oauth

# Its errors carry RFC 6749's fields too (initialize/errors.py).
OAUTH_BLUEPRINT = "oauth"


def init_oauth_router() -> Blueprint:
    """No guard: each endpoint authenticates what its RFC says (a grant, the token, a client)."""
    bp = Blueprint(OAUTH_BLUEPRINT, __name__, url_prefix="/oauth")
    bp.add_url_rule("/token", view_func=oauth.token, methods=["POST"])
    bp.add_url_rule("/revoke", view_func=oauth.revoke, methods=["POST"])
    bp.add_url_rule("/introspect", view_func=oauth.introspect, methods=["POST"])
    return bp
