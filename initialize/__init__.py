"""The application factory: the only place an app is built and wired."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from flask import Flask
from redis import RedisError

from initialize.cli import register_cli
from initialize.config import ConfigError
from initialize.config import load_settings
from initialize.envelope import RequestEnvelope
from initialize.envelope import register_route_label
from initialize.errors import register_error_handlers
from initialize.headers import register_cors
from initialize.logs import build_logger
from initialize.logs import configure_logging
from initialize.redis import build_allowlist_cache
from initialize.redis import build_redis_client
from initialize.redis import check_eviction_policy
from routers import register_routers
from utils.body import BodyGuard
from utils.body import BodyJSONProvider
from utils.metrics import Metrics
from utils.passwords import hash_password
from utils.redis import RedisStore
from utils.redis_connection import Client
from utils.state import APP_STATE
from utils.state import AppState
from utils.tokens import Tokens

# Submodule imports bind names on this package (``initialize.redis`` would shadow redis-py
# here), so redis-py's names are imported directly above.
__all__ = ["ConfigError", "create_app"]

SEED_FIRST_PAUSE_SECONDS = 0.25
SEED_MAX_PAUSE_SECONDS = 5.0
SEED_RETRY_FOR_SECONDS = 15 * 60.0


def create_app(
    environ: Mapping[str, str] | None = None, *, redis_client: Client | None = None
) -> Flask:
    """Build the app from ``environ`` (default: the process environment).

    :param redis_client: a client to use instead of one built from REDIS_URL (tests pass
        fakeredis here). Raises :class:`ConfigError` on a bad setting.
    """
    settings = load_settings(os.environ if environ is None else environ)
    configure_logging(settings.log_format)
    app = Flask(__name__, static_folder=None)  # an API: no static files to serve
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.json = BodyJSONProvider(app)
    client = redis_client or build_redis_client(settings)
    store = RedisStore(
        client,
        settings.redis_key_prefix,
        build_allowlist_cache(settings, client),
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    tokens = Tokens(
        settings.keys,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl,
        settings.refresh_token_ttl,
    )
    tokens.init_app(app)
    metrics = Metrics(settings.metrics_dir)
    # Outermost first: every answer, even one refused by the body guard, gets its request id
    # and the security headers, and is counted.
    app.wsgi_app = RequestEnvelope(
        BodyGuard(app.wsgi_app, settings.max_content_length), settings.trusted_proxies, metrics
    )
    APP_STATE.bind(
        app, AppState(settings, store, tokens, metrics, build_logger(settings.log_format))
    )
    register_route_label(app)
    register_routers(app)
    register_error_handlers(app)
    register_cors(app, settings)
    register_cli(app)
    check_eviction_policy(store, app.logger)
    _seed_demo_users(app, store, settings.demo_users)
    return app


def _seed_demo_users(app: Flask, store: RedisStore, users: tuple[tuple[str, str], ...]) -> None:
    """Create DEMO_USERS that are absent. If Redis is down at start, a background thread keeps
    trying (backing off to every few seconds, for a bounded time): requests never pay for it."""
    if not users:
        return

    def seed() -> bool:
        try:
            for username, password in users:
                if not store.user_exists(username):
                    store.create_user(username, hash_password(password))
        except RedisError:
            return False
        return True

    if seed():
        return
    app.logger.warning("Redis unavailable at start: demo users will be created when it answers")

    def seed_when_redis_returns() -> None:
        deadline, pause = time.monotonic() + SEED_RETRY_FOR_SECONDS, SEED_FIRST_PAUSE_SECONDS
        while time.monotonic() < deadline:
            time.sleep(pause)
            if seed():
                app.logger.info("Redis answers again: demo users created")
                return
            pause = min(pause * 2, SEED_MAX_PAUSE_SECONDS)
        app.logger.warning("demo users were not created: Redis did not answer in time")

    threading.Thread(target=seed_when_redis_returns, name="seed-demo-users", daemon=True).start()
