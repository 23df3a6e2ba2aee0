"""Probes for orchestrators, and the JWKS document."""

from __future__ import annotations

from flask import Response
from flask import jsonify

from utils.errors import NotFound
from utils.errors import ServiceUnavailable
from utils.redis_connection import NOEVICTION
from utils.state import get_settings
from utils.state import get_store


def healthz() -> Response:
    """200 while the process serves requests; touches nothing else."""
    return jsonify(status="ok")


def readyz() -> Response:
    """200 when Redis answers and keeps what it is given; otherwise a 503 (a RedisError
    becomes one like everywhere else). An evicting Redis can revive revoked tokens or lose
    accounts; a Redis that refuses CONFIG is not failed for it (start-up warned)."""
    store = get_store()
    store.redis.ping()
    policies = store.redis.eviction_policies() or {NOEVICTION}
    if policies != {NOEVICTION}:
        raise ServiceUnavailable(
            f"Redis maxmemory-policy is {', '.join(sorted(policies))}; it must be noeviction."
        )
    return jsonify(status="ready")


def jwks() -> Response:
    """Public keys for asymmetric algorithms; with an HMAC secret there is nothing to publish."""
    keys = get_settings().keys
    if not keys.is_asymmetric:
        raise NotFound("No public keys: tokens are signed with a shared secret (HMAC).")
    response = jsonify(keys.jwks)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
