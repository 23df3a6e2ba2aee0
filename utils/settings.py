"""The service's settings as a type: what initialize/config.py reads from the environment.

The type lives down here so that utils and the per-app state can name it; reading, parsing and
validating the environment stay in one place, ``initialize.config.load_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.keys import KeySet
from utils.net import AddressNetwork
from utils.token_lookup import TokenSource


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn.conf.py hands gunicorn: where to listen and how many workers and threads."""

    bind: str
    workers: int
    threads: int
    worker_class: str
    # seconds a client may take to send a whole request head (the threads worker closes it then)
    client_header_timeout: float


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, typed and validated."""

    app_env: str
    keys: KeySet
    jwt_issuer: str
    jwt_audience: str | None
    access_token_ttl: int
    refresh_token_ttl: int
    redis_url: str
    redis_key_prefix: str
    redis_mode: str
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str
    redis_socket_timeout: float
    redis_connect_timeout: float
    redis_wait_replicas: int
    redis_wait_timeout_ms: int
    allowlist_cache_seconds: float
    token_lookup: tuple[TokenSource, ...]
    demo_users: tuple[tuple[str, str], ...]
    login_max_failures: int
    login_lock_seconds: int
    account_max_failures: int
    register_max_per_address: int
    register_window_seconds: int
    cookie_mode: bool
    cors_origins: tuple[str, ...]
    trusted_proxies: frozenset[str]
    max_content_length: int
    introspection_clients: tuple[tuple[str, str], ...]
    admin_clients: tuple[tuple[str, str], ...]
    admin_allow_ips: tuple[AddressNetwork, ...]
    max_sessions_per_user: int
    refresh_reuse_grace_seconds: int
    log_format: str
    metrics_allow_ips: tuple[AddressNetwork, ...]
    metrics_dir: str | None
    server: ServerSettings

    @property
    def jwt_algorithm(self) -> str:
        """The one algorithm tokens are signed and verified with (the key set's)."""
        return self.keys.algorithm

    @property
    def is_development(self) -> bool:
        """True when the built-in dev secret and demo user are allowed."""
        return self.app_env == "development"
