"""The guard of ``/admin``: only configured clients, only from allowed addresses.

Without ADMIN_CLIENTS, or from an address outside ADMIN_ALLOW_IPS (the client address as for
every other rule: the last X-Forwarded-For hop only from a FORWARDED_ALLOW_IPS peer), the routes
answer 404 as an unknown path does; otherwise HTTP Basic with one of the clients, compared in
constant time (the introspection endpoint's check), else 401 with a Basic challenge.
"""

from __future__ import annotations

from flask import g
from flask import request

from utils.audit import CLIENT_KEY
from utils.auth import is_configured_client
from utils.errors import BasicAuthRequired
from utils.errors import NotFound
from utils.net import address_in
from utils.state import get_settings

ADMIN_REALM = "flask-jwt-redis admin"


def admin_visible() -> bool:
    """Whether this request may learn that ``/admin`` exists (clients configured, and the
    caller's address allowed)."""
    settings = get_settings()
    client = request.environ.get(CLIENT_KEY) or request.remote_addr or ""
    return bool(settings.admin_clients) and address_in(client, settings.admin_allow_ips)


def require_admin() -> None:
    """A ``before_request`` hook: sets ``g.admin`` to the client id, or raises."""
    if not admin_visible():
        raise NotFound("No such path.")
    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or not is_configured_client(
            credentials.username, credentials.password, get_settings().admin_clients
        )
    ):
        raise BasicAuthRequired(
            "Administration needs the credentials of a configured client (HTTP Basic).",
            ADMIN_REALM,
        )
    g.admin = credentials.username
