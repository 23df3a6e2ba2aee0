"""The URL map: which handler serves which path, behind which guard."""

from __future__ import annotations

from flask import Flask

from routers.admin import init_admin_router
from routers.health import init_health_router
from routers.oauth import init_oauth_router
from routers.operations import init_operations_router
from routers.public import init_public_router
from routers.user import init_user_router


def register_routers(app: Flask) -> None:
    """Register the public, user, OAuth, health, operations and admin blueprints on ``app``."""
    app.register_blueprint(init_public_router())
    app.register_blueprint(init_user_router())
    app.register_blueprint(init_oauth_router())
    app.register_blueprint(init_health_router())
    app.register_blueprint(init_operations_router())
    app.register_blueprint(init_admin_router())
