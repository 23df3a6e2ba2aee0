"""Configuration: read once from the environment, validated, frozen.

A bad value stops start-up with one line that names the variable (SPEC "Configuration"), so
every parser here raises :class:`ConfigError` carrying the variable's name and never echoes a
secret.
"""

from __future__ import annotations

import math
import os
import re
import select
from collections.abc import Mapping
from pathlib import Path

from utils.keys import KeyFileError
from utils.keys import KeySet
from utils.keys import asymmetric_key_set
from utils.keys import hmac_key_set
from utils.keys import load_private_key
from utils.keys import load_public_key
from utils.net import DEFAULT_TRUSTED_PROXIES
from utils.net import AddressNetwork
from utils.net import parse_networks
from utils.net import parse_trusted_proxies
from utils.settings import ServerSettings
from utils.settings import Settings
from utils.token_lookup import TokenSource
from utils.token_lookup import parse_token_lookup
from utils.users import USERNAME_PATTERN

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")
APP_ENVS = ("production", "development")
MIN_SECRET_BYTES = 32
# RFC 7518 §3.2: an HMAC key at least as long as the hash output (PyJWT warns otherwise).
MIN_SECRET_BYTES_BY_ALGORITHM = {"HS256": MIN_SECRET_BYTES, "HS384": 48, "HS512": 64}
DEVELOPMENT_SECRET = (
    b"flask-jwt-redis development secret: known to everyone, never use it in production"
)
DEVELOPMENT_DEMO_USERS = "kesa:123"
# A lookup specification, not a password (bandit B105 and ruff S105 take it for one).
DEFAULT_TOKEN_LOOKUP = "header: Authorization, query: token, cookie: jwt, form: token"  # noqa: S105  # nosec B105
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_MODES = ("standalone", "sentinel", "cluster")
# RFC 6749 §2.3.1 form-encodes client credentials inside HTTP Basic; limiting them to characters
# that encoding leaves alone means every client library's header compares equal.
CLIENT_CREDENTIAL_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")
MIN_CLIENT_SECRET_LENGTH = 16
LOG_FORMATS = ("json", "text")
DEFAULT_METRICS_ALLOW_IPS = "127.0.0.1,::1"
DEFAULT_ADMIN_ALLOW_IPS = "127.0.0.1,::1"
# "threads" is this project's threaded worker (initialize/thread_worker.py, Linux's epoll);
# the others are gunicorn's own that run this WSGI app with what requirements.txt installs.
WORKER_CLASSES = ("threads", "gthread", "sync")
_EPOLL = hasattr(select, "epoll")
DEFAULT_PORT = 9090
# A connection's request head must be complete this many seconds after it began (threads worker).
DEFAULT_CLIENT_HEADER_TIMEOUT = 10.0
DEFAULT_ALLOWLIST_CACHE_SECONDS = 1.0
MAX_ALLOWLIST_CACHE_SECONDS = 60
MAX_PORT = 65535
# Chosen by measurement (BENCHMARKS.md, issue 13): threads keeps connections alive and keeps
# answering while logins hash, as gthread does, at about sync's cost per new connection.
DEFAULT_WORKER_CLASS = "threads" if _EPOLL else "gthread"
DEFAULT_WORKERS = os.cpu_count() or 1
DEFAULT_THREADS = {"sync": 1, "gthread": 4, "threads": 4}
# prometheus_client reads this variable itself; gunicorn.conf.py sets it (see there).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; ``str()`` is the one line to print."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable} {problem}")
        self.variable = variable


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from ``environ`` or raise :class:`ConfigError`."""
    app_env = _choice(environ, "APP_ENV", "production", APP_ENVS)
    algorithm = _choice(environ, "JWT_ALGORITHM", "HS256", HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)
    if algorithm in ASYMMETRIC_ALGORITHMS:
        keys = _asymmetric_keys(environ, algorithm)
    else:
        keys = hmac_key_set(
            algorithm, _read_secret(environ, app_env, MIN_SECRET_BYTES_BY_ALGORITHM[algorithm])
        )
    default_demo_users = DEVELOPMENT_DEMO_USERS if app_env == "development" else ""
    return Settings(
        app_env=app_env,
        keys=keys,
        jwt_issuer=_text(environ, "JWT_ISSUER", "jwt-demo"),
        jwt_audience=environ.get("JWT_AUDIENCE") or None,
        access_token_ttl=_positive_int(environ, "ACCESS_TOKEN_TTL", 900),
        refresh_token_ttl=_positive_int(environ, "REFRESH_TOKEN_TTL", 604800),
        **_redis_settings(environ),
        token_lookup=_token_lookup(environ),
        demo_users=_demo_users(environ.get("DEMO_USERS", default_demo_users)),
        login_max_failures=_positive_int(environ, "LOGIN_MAX_FAILURES", 10),
        login_lock_seconds=_positive_int(environ, "LOGIN_LOCK_SECONDS", 900),
        account_max_failures=_positive_int(environ, "ACCOUNT_MAX_FAILURES", 100),
        register_max_per_address=_positive_int(environ, "REGISTER_MAX_PER_ADDRESS", 10),
        register_window_seconds=_positive_int(environ, "REGISTER_WINDOW_SECONDS", 3600),
        cookie_mode=_boolean(environ, "COOKIE_MODE", False),
        cors_origins=_cors_origins(environ.get("CORS_ORIGINS", "")),
        trusted_proxies=parse_trusted_proxies(
            environ.get("FORWARDED_ALLOW_IPS", DEFAULT_TRUSTED_PROXIES)
        ),
        max_content_length=_positive_int(environ, "MAX_CONTENT_LENGTH", 10 * 1024 * 1024),
        introspection_clients=_clients(environ, "INTROSPECTION_CLIENTS"),
        admin_clients=_clients(environ, "ADMIN_CLIENTS"),
        admin_allow_ips=_networks(environ, "ADMIN_ALLOW_IPS", DEFAULT_ADMIN_ALLOW_IPS),
        max_sessions_per_user=_positive_int(environ, "MAX_SESSIONS_PER_USER", 100),
        refresh_reuse_grace_seconds=_non_negative_int(environ, "REFRESH_REUSE_GRACE_SECONDS", 0),
        log_format=_choice(
            environ, "LOG_FORMAT", "text" if app_env == "development" else "json", LOG_FORMATS
        ),
        metrics_allow_ips=_networks(environ, "METRICS_ALLOW_IPS", DEFAULT_METRICS_ALLOW_IPS),
        metrics_dir=_metrics_dir(environ),
        server=_server_settings(environ),
    )


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = environ.get(name) or default
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _text(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, default)
    if not value.strip():
        raise ConfigError(name, "must not be empty")
    return value


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _integer(environ, name, default, minimum=1)


def _non_negative_int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _integer(environ, name, default, minimum=0)


def _integer(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\s*\d+\s*", raw) or int(raw) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ConfigError(name, f"must be {kind} (got {raw!r})")
    return int(raw)


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, f"must be one of true/false/1/0/yes/no (got {raw!r})")


def _read_secret(environ: Mapping[str, str], app_env: str, min_bytes: int) -> bytes:
    inline = environ.get("JWT_SECRET")
    path = environ.get("JWT_SECRET_FILE")
    if inline and path:
        raise ConfigError("JWT_SECRET", "and JWT_SECRET_FILE are both set; set only one")
    if path:
        try:
            secret = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError("JWT_SECRET_FILE", f"cannot be read ({error.strerror})") from None
        secret = secret.removesuffix(b"\n").removesuffix(b"\r")
        name = "JWT_SECRET_FILE"
    elif inline:
        secret = inline.encode("utf-8")
        name = "JWT_SECRET"
    elif app_env == "development":
        return DEVELOPMENT_SECRET
    else:
        raise ConfigError("JWT_SECRET", "is required in production (or JWT_SECRET_FILE)")
    if app_env == "production" and len(secret) < min_bytes:
        raise ConfigError(name, f"must be at least {min_bytes} bytes in production")
    return secret


def _asymmetric_keys(environ: Mapping[str, str], algorithm: str) -> KeySet:
    private_key_file = environ.get("JWT_PRIVATE_KEY_FILE")
    if not private_key_file:
        raise ConfigError("JWT_PRIVATE_KEY_FILE", f"is required with JWT_ALGORITHM={algorithm}")
    try:
        private_key = load_private_key(algorithm, private_key_file)
    except KeyFileError as error:
        raise ConfigError("JWT_PRIVATE_KEY_FILE", str(error)) from None
    previous_files = environ.get("JWT_PREVIOUS_PUBLIC_KEY_FILES", "").split(",")
    try:
        previous = [load_public_key(algorithm, p.strip()) for p in previous_files if p.strip()]
    except KeyFileError as error:
        raise ConfigError("JWT_PREVIOUS_PUBLIC_KEY_FILES", str(error)) from None
    return asymmetric_key_set(algorithm, private_key, previous)


def _redis_settings(environ: Mapping[str, str]) -> dict[str, object]:
    """SPEC "Redis topologies": where Redis is and how long to wait for it."""
    mode = _choice(environ, "REDIS_MODE", "standalone", REDIS_MODES)
    url = environ.get("REDIS_URL") or "redis://localhost:6379/0"
    schemes = REDIS_URL_SCHEMES if mode == "standalone" else REDIS_URL_SCHEMES[:2]
    if not url.startswith(schemes):
        raise ConfigError("REDIS_URL", f"must start with {', '.join(schemes)}")
    prefix = environ.get("REDIS_KEY_PREFIX", "jwt:")
    if "{" in prefix or "}" in prefix:  # a brace would change which cluster slot keys go to
        raise ConfigError("REDIS_KEY_PREFIX", "must not contain { or }")
    sentinels = _addresses(environ, "REDIS_SENTINELS")
    if mode == "sentinel" and not sentinels:
        raise ConfigError("REDIS_SENTINELS", "is required with REDIS_MODE=sentinel")
    return {
        "redis_url": url,
        "redis_key_prefix": prefix,
        "redis_mode": mode,
        "redis_sentinels": sentinels,
        "redis_sentinel_master": _text(environ, "REDIS_SENTINEL_MASTER", "mymaster"),
        "redis_socket_timeout": _positive_seconds(environ, "REDIS_SOCKET_TIMEOUT", 2.0),
        "redis_connect_timeout": _positive_seconds(environ, "REDIS_CONNECT_TIMEOUT", 1.0),
        # SPEC "Durable changes": replicated topologies wait for a replica by default; a
        # timeout of 0 would make Redis's WAIT wait for ever.
        "redis_wait_replicas": _non_negative_int(
            environ, "REDIS_WAIT_REPLICAS", 0 if mode == "standalone" else 1
        ),
        "redis_wait_timeout_ms": _positive_int(environ, "REDIS_WAIT_TIMEOUT_MS", 500),
        "allowlist_cache_seconds": _allowlist_cache_seconds(environ),
    }


def _addresses(environ: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    addresses = []
    for entry in filter(None, (part.strip() for part in environ.get(name, "").split(","))):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(name, f"must be host:port pairs separated by commas (got {entry!r})")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> tuple[float, str]:
    """The variable as a number of seconds (NaN when it is not a number), and its raw text."""
    raw = environ.get(name) or str(default)
    try:
        return float(raw), raw
    except ValueError:
        return math.nan, raw


def _positive_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    seconds, raw = _seconds(environ, name, default)
    if not 0 < seconds < math.inf:
        raise ConfigError(name, f"must be a positive number of seconds (got {raw!r})")
    return seconds


def _allowlist_cache_seconds(environ: Mapping[str, str]) -> float:
    """How long a worker may reuse an "active" answer that Redis has not invalidated
    (utils/allowlist_cache.py): 0 asks Redis on every request."""
    name = "ALLOWLIST_CACHE_SECONDS"
    seconds, raw = _seconds(environ, name, DEFAULT_ALLOWLIST_CACHE_SECONDS)
    if not 0 <= seconds <= MAX_ALLOWLIST_CACHE_SECONDS:
        raise ConfigError(name, f"must be 0 to {MAX_ALLOWLIST_CACHE_SECONDS} seconds (got {raw!r})")
    return seconds


def _token_lookup(environ: Mapping[str, str]) -> tuple[TokenSource, ...]:
    try:
        return parse_token_lookup(environ.get("TOKEN_LOOKUP") or DEFAULT_TOKEN_LOOKUP)
    except ValueError as error:
        raise ConfigError("TOKEN_LOOKUP", str(error)) from None


def _demo_users(raw: str) -> tuple[tuple[str, str], ...]:
    users = []
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        name, separator, password = entry.partition(":")
        if not separator or not password:
            raise ConfigError("DEMO_USERS", "must be name:password pairs separated by commas")
        if not USERNAME_PATTERN.fullmatch(name):
            raise ConfigError("DEMO_USERS", f"has an invalid username {name!r}")
        users.append((name, password))
    return tuple(users)


def _cors_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(filter(None, (part.strip().rstrip("/") for part in raw.split(","))))
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError("CORS_ORIGINS", f"has an invalid origin {origin!r}")
    return origins


def _clients(environ: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """``id:secret,…``: the HTTP Basic clients of /oauth/introspect or of /admin."""
    clients = []
    for entry in filter(None, (part.strip() for part in environ.get(name, "").split(","))):
        client_id, _, secret = entry.partition(":")
        if not CLIENT_CREDENTIAL_PATTERN.fullmatch(client_id) or not (
            CLIENT_CREDENTIAL_PATTERN.fullmatch(secret)
        ):
            raise ConfigError(
                name, "must be id:secret pairs separated by commas, of A-Z a-z 0-9 . _ ~ -"
            )
        if len(secret) < MIN_CLIENT_SECRET_LENGTH:
            raise ConfigError(
                name,
                f"has a secret shorter than {MIN_CLIENT_SECRET_LENGTH} characters "
                f"(client {client_id!r})",
            )
        clients.append((client_id, secret))
    return tuple(clients)


def _networks(environ: Mapping[str, str], name: str, default: str) -> tuple[AddressNetwork, ...]:
    try:
        return parse_networks(environ.get(name, default))
    except ValueError as error:
        raise ConfigError(name, str(error)) from None


def _metrics_dir(environ: Mapping[str, str]) -> str | None:
    """prometheus_client's multiprocess directory, which gunicorn.conf.py prepares."""
    path = environ.get(METRICS_DIR_VARIABLE)
    if path and not Path(path).is_dir():
        raise ConfigError(METRICS_DIR_VARIABLE, f"is not a directory ({path!r})")
    return path or None


def _server_settings(environ: Mapping[str, str]) -> ServerSettings:
    port = _positive_int(environ, "PORT", DEFAULT_PORT)
    if port > MAX_PORT:
        raise ConfigError("PORT", f"must be a TCP port number, 1-{MAX_PORT} (got {port})")
    bind = environ.get("BIND") or f"127.0.0.1:{port}"
    if not re.fullmatch(r"unix:\S+|(\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}", bind) or (
        not bind.startswith("unix:") and not 0 < int(bind.rsplit(":", 1)[1]) <= MAX_PORT
    ):
        raise ConfigError("BIND", f"must be HOST:PORT, [IPv6]:PORT or unix:PATH (got {bind!r})")
    worker_class = _choice(environ, "GUNICORN_WORKER_CLASS", DEFAULT_WORKER_CLASS, WORKER_CLASSES)
    if worker_class == "threads" and not _EPOLL:
        raise ConfigError("GUNICORN_WORKER_CLASS", "threads needs Linux (epoll); use gthread")
    threads = _positive_int(environ, "GUNICORN_THREADS", DEFAULT_THREADS[worker_class])
    if threads > 1 and worker_class == "sync":  # gunicorn's own rule, made visible here
        worker_class = "gthread"
    return ServerSettings(
        bind=bind,
        workers=_positive_int(environ, "WEB_CONCURRENCY", DEFAULT_WORKERS),
        threads=threads,
        worker_class=worker_class,
        client_header_timeout=_positive_seconds(
            environ, "CLIENT_HEADER_TIMEOUT", DEFAULT_CLIENT_HEADER_TIMEOUT
        ),
    )
