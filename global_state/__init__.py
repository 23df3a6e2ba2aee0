"""Accessors for what start-up binds to the app (the Go app's ``global`` package).

Nothing here is created at import time: ``create_app`` stores the objects in
``app.extensions`` and these functions find them through ``current_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # type names only: global_state sits below initialize and utils
    from initialize.config import Settings
    from utils.redis import RedisStore

EXTENSION_KEY = "flask-jwt-redis"


def get_store() -> RedisStore:
    """The app's Redis store; fails loudly if ``create_app`` did not bind one."""
    try:
        return current_app.extensions[EXTENSION_KEY]["store"]
    except KeyError:
        raise RuntimeError("Redis is not initialised: build the app with create_app()") from None


def get_settings() -> Settings:
    """The validated settings the app was built with."""
    try:
        return current_app.extensions[EXTENSION_KEY]["settings"]
    except KeyError:
        raise RuntimeError("Settings are not loaded: build the app with create_app()") from None
