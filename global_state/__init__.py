"""Accessors for what start-up binds to the app (the Go app's ``global`` package).

Nothing here is created at import time: ``create_app`` stores an :class:`AppState` in
``app.extensions`` and these functions find it through ``current_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # type names only: global_state sits below initialize and utils
    from structlog.typing import FilteringBoundLogger

    from initialize.config import Settings
    from utils.jwt import TokenVerifier
    from utils.metrics import Metrics
    from utils.redis import RedisStore

EXTENSION_KEY = "flask-jwt-redis"


@dataclass(frozen=True)
class AppState:
    """The per-app (so per-worker) objects built once at start-up."""

    settings: Settings
    store: RedisStore
    verifier: TokenVerifier
    metrics: Metrics
    audit_log: FilteringBoundLogger


def get_state() -> AppState:
    """The app's state; fails loudly if the app was not built by ``create_app``."""
    try:
        return current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("flask-jwt-redis is not initialised: use create_app()") from None


def get_store() -> RedisStore:
    """The app's Redis store."""
    return get_state().store


def get_audit_log() -> FilteringBoundLogger:
    """The logger audit events are written with."""
    return get_state().audit_log


def get_metrics() -> Metrics:
    """The app's Prometheus metrics."""
    return get_state().metrics


def get_settings() -> Settings:
    """The validated settings the app was built with."""
    return get_state().settings


def get_verifier() -> TokenVerifier:
    """The app's token verifier (one key set, issuer and audience)."""
    return get_state().verifier
