"""Fixtures: fakeredis for speed, and a private redis-server the suite starts itself.

The real server listens on a free loopback port in a temporary directory; it is never the
machine's own Redis. Without redis-server installed the real-Redis tests are skipped with a
reason, unless REQUIRE_REAL_REDIS=1 (as in CI), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import ClassVar

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from redis.cluster import RedisCluster

from devtools import processes
from initialize import create_app
from initialize.config import load_settings
from initialize.redis import build_redis_client
from utils.state import get_store

DEV_ENV = {"APP_ENV": "development"}

# Every variable the app, gunicorn.conf.py and the scripts read: tests that run a script or a
# server clear them, so settings exported in a developer's shell cannot change the outcome.
SERVICE_VARIABLES = frozenset(
    {
        "ACCESS_TOKEN_TTL",
        "ADMIN_ALLOW_IPS",
        "ADMIN_CLIENTS",
        "ACCOUNT_MAX_FAILURES",
        "ALLOWLIST_CACHE_SECONDS",
        "APP_ENV",
        "BIND",
        "COOKIE_MODE",
        "CORS_ORIGINS",
        "DATA_DIR",
        "DEMO_USERS",
        "DOCKER_PUBLISH",
        "FORWARDED_ALLOW_IPS",
        "GUNICORN_THREADS",
        "GUNICORN_WORKER_CLASS",
        "INTROSPECTION_CLIENTS",
        "JWT_ALGORITHM",
        "JWT_AUDIENCE",
        "JWT_ISSUER",
        "JWT_PREVIOUS_PUBLIC_KEY_FILES",
        "JWT_PRIVATE_KEY_FILE",
        "JWT_SECRET",
        "JWT_SECRET_FILE",
        "LOCAL_REDIS",
        "LOGIN_LOCK_SECONDS",
        "LOGIN_MAX_FAILURES",
        "LOG_FORMAT",
        "MAX_CONTENT_LENGTH",
        "MAX_SESSIONS_PER_USER",
        "METRICS_ALLOW_IPS",
        "PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "PYTHON",
        "REDIS_CONNECT_TIMEOUT",
        "REDIS_KEY_PREFIX",
        "REDIS_MODE",
        "REDIS_SENTINEL_MASTER",
        "REDIS_SENTINELS",
        "REDIS_SOCKET_TIMEOUT",
        "REDIS_WAIT_REPLICAS",
        "REDIS_WAIT_TIMEOUT_MS",
        "REDIS_URL",
        "REFRESH_REUSE_GRACE_SECONDS",
        "REFRESH_TOKEN_TTL",
        "REGISTER_MAX_PER_ADDRESS",
        "REGISTER_WINDOW_SECONDS",
        "STOP_TIMEOUT",
        "TOKEN_LOOKUP",
        "WEB_CONCURRENCY",
    }
)


@dataclass
class RedisServer:
    """A redis-server process this suite started."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM by its pid, SIGKILL if it has not exited within 10 s."""
        processes.stop_process(self.process, 10)


def require_binary(name: str, package: str) -> str:
    """``name``'s path; skips the test without it, fails it under REQUIRE_REAL_REDIS=1."""
    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("REQUIRE_REAL_REDIS") == "1":
            pytest.fail(f"REQUIRE_REAL_REDIS=1 but {name} is not installed")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return binary


def redis_server_binary() -> str:
    """redis-server's path (see :func:`require_binary`)."""
    return require_binary("redis-server", "redis-server")


def start_redis_server(directory: Path) -> RedisServer:
    """Start redis-server on a free loopback port and wait (bounded) until it answers."""
    binary = redis_server_binary()
    try:
        process, port = processes.start_redis_server(
            binary, directory, "--save", "", "--appendonly", "no", timeout=10
        )
    except RuntimeError:
        pytest.fail("redis-server did not answer within 10 s")
    return RedisServer(process, port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole session."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class ClosedAfterTest(redis.Connection):
    """A connection to the private server that is closed when the test ends, however it was
    made: by a client's pool, or by the store's own stack of connections, which it builds from
    the pool's ``connection_class`` outside the pool (utils/redis_connection.py).

    Apps keep their connections until the garbage collector breaks the apps' reference cycles,
    and a collection may finalize a socket before the connection that owns it: an unclosed
    socket's ResourceWarning, which filterwarnings=error turned into a failed run.
    """

    opened: ClassVar[weakref.WeakSet[redis.Connection]] = weakref.WeakSet()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opened.add(self)

    @classmethod
    def close_all(cls) -> None:
        for connection in list(cls.opened):
            connection.disconnect()


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private server, emptied before the test; every connection made through
    it is closed after the test."""
    client = redis.Redis.from_url(
        redis_server.url, decode_responses=True, connection_class=ClosedAfterTest
    )
    client.flushall()
    yield client
    client.close()
    ClosedAfterTest.close_all()


def service_client(url: str, **environ: str) -> redis.Redis | RedisCluster:
    """A client built as the service builds its own (mode, timeouts, retry), for ``url``."""
    client = build_redis_client(load_settings({**DEV_ENV, "REDIS_URL": url, **environ}))
    return client if isinstance(client, redis.Redis) else client()


@pytest.fixture
def fake_redis() -> redis.Redis:
    """A fresh in-memory fakeredis server per test."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One 3-primary, 3-replica Redis Cluster for the whole session."""
    from tests.redis_topologies import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory):
    """One primary + replica + 3 sentinels for the whole session."""
    from tests.redis_topologies import start_sentinel_group

    group = start_sentinel_group(tmp_path_factory.mktemp("sentinel"))
    yield group
    group.stop()


class WholeCluster(RedisCluster):
    """A cluster client whose KEYS lists every primary's keys (RedisCluster asks one node),
    as the tests that look at all keys expect; everything else is RedisCluster's own."""

    def keys(self, pattern: str = "*", **kwargs):
        return super().keys(pattern, target_nodes=self.PRIMARIES, **kwargs)


@pytest.fixture
def cluster_redis(redis_cluster) -> Iterator[RedisCluster]:
    """A cluster client with the service's settings, every primary emptied before the test;
    its connections are closed after the test (an unclosed one fails the run as a warning)."""
    settings = load_settings({**DEV_ENV, "REDIS_URL": redis_cluster.url, "REDIS_MODE": "cluster"})
    client = WholeCluster.from_url(
        redis_cluster.url,
        decode_responses=True,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
    )
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
def sentinel_redis(sentinel_group) -> redis.Redis:
    """The service's Sentinel client (``master_for``), the primary emptied before the test."""
    client = service_client("redis://127.0.0.1/0", **sentinel_group.environ)
    client.flushall()
    return client


REDIS_FIXTURES = {
    "fakeredis": "fake_redis",
    "redis-server": "real_redis",
    "cluster": "cluster_redis",
    "sentinel": "sentinel_redis",
}


@pytest.fixture(params=list(REDIS_FIXTURES))
def redis_client(request: pytest.FixtureRequest) -> redis.Redis | RedisCluster:
    """Run a test on fakeredis, a real server, a real cluster and a real Sentinel group."""
    return request.getfixturevalue(REDIS_FIXTURES[request.param])


_APPS_WITH_OWN_REDIS: list[Flask] = []


def app_with_own_redis(environ: dict[str, str]) -> Flask:
    """``create_app(environ)`` with the client it builds from REDIS_URL (as a worker does);
    that client's connections are closed after the test, so none is left to the collector
    (an unclosed socket's ResourceWarning fails the run)."""
    app = create_app(environ)
    _APPS_WITH_OWN_REDIS.append(app)
    return app


@pytest.fixture(autouse=True)
def _close_apps_own_redis() -> Iterator[None]:
    yield
    while _APPS_WITH_OWN_REDIS:
        with _APPS_WITH_OWN_REDIS.pop().app_context():
            get_store().close()


@pytest.fixture
def make_app(redis_client: redis.Redis):
    """Build apps on the parametrized Redis: ``make_app(COOKIE_MODE="true")``."""

    def build(**environ: str) -> Flask:
        return create_app({**DEV_ENV, **environ}, redis_client=redis_client)

    return build


@pytest.fixture
def app(make_app) -> Flask:
    """The development app (demo user kesa/123)."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class AuthActions:
    """Log in and build headers, as flaskr's tests do."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, username: str = "kesa", password: str = "123") -> dict:
        response = self.client.post(
            "/public/login", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def oauth_login(self, username: str = "kesa", password: str = "123") -> dict:
        """Tokens from the password grant, as a native app gets them (in cookie mode too),
        under the names /public/login uses."""
        response = self.client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        return {"accessToken": body["access_token"], "refreshToken": body["refresh_token"]}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)
