"""The per-app state ``create_app`` builds once per worker, and its accessors.

The accessors fail loudly outside an app built by ``create_app`` (global_state's slot does).
"""

from __future__ import annotations

from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from global_state import AppSlot
from utils.metrics import Metrics
from utils.redis import RedisStore
from utils.settings import Settings
from utils.tokens import Tokens


@dataclass(frozen=True)
class AppState:
    """The per-app (so per-worker) objects built once at start-up."""

    settings: Settings
    store: RedisStore
    tokens: Tokens
    metrics: Metrics
    audit_log: FilteringBoundLogger


APP_STATE: AppSlot[AppState] = AppSlot("flask-jwt-redis")


def get_state() -> AppState:
    """The app's state."""
    return APP_STATE.get()


def get_store() -> RedisStore:
    """The app's Redis store."""
    return APP_STATE.get().store


def get_settings() -> Settings:
    """The validated settings the app was built with."""
    return APP_STATE.get().settings


def get_tokens() -> Tokens:
    """The app's token minter and verifier (one key set, issuer and audience)."""
    return APP_STATE.get().tokens


def get_metrics() -> Metrics:
    """The app's Prometheus metrics."""
    return APP_STATE.get().metrics


def get_audit_log() -> FilteringBoundLogger:
    """The logger audit events are written with."""
    return APP_STATE.get().audit_log
