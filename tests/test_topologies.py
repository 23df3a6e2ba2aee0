"""Beyond one Redis (SPEC "Redis topologies"): a primary killed under load in a Sentinel group
and in a Redis Cluster, and two gunicorn instances sharing one Redis.

The endpoint suite itself runs on every topology through the ``redis_client`` fixture; here
are the failures. The failover tests get topologies of their own (they leave a node dead).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from flask import Flask

from devtools.processes import free_port
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from tests.conftest import app_with_own_redis
from tests.redis_topologies import SENTINEL_MASTER
from tests.redis_topologies import Cluster
from tests.redis_topologies import SentinelGroup
from tests.redis_topologies import start_cluster
from tests.redis_topologies import start_sentinel_group
from tests.redis_topologies import wait_until
from tests.test_server import GUNICORN
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop

BEARER = AuthActions.bearer
SOCKET_TIMEOUT = 1.0
LOAD_SECONDS = 15.0
KILL_AFTER_SECONDS = 3.0
CLIENT_THREADS = 4
# A request may wait out a socket timeout and redis-py's few retries (50-500 ms apart), never
# more: the bound a client sees while Redis is gone.
REQUEST_BOUND_SECONDS = 2 * SOCKET_TIMEOUT + 2.0
RECOVERY_BOUND_SECONDS = 10.0  # 1 s to judge the primary down, then the election


@dataclass
class Outcome:
    at: float  # seconds since the load started
    token: int
    status: int
    seconds: float
    retry_after: str | None


def run_load(app: Flask, tokens: list[str], kill) -> list[Outcome]:
    """CLIENT_THREADS threads presenting ``tokens`` for LOAD_SECONDS; ``kill()`` runs after
    KILL_AFTER_SECONDS. Bounded in time and by the request bound."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start_at = time.monotonic()

    def client_loop(index: int) -> None:
        client = app.test_client()
        n = index
        while (now := time.monotonic() - start_at) < LOAD_SECONDS:
            n += 1
            begun = time.monotonic()
            response = client.get("/user/welcome", headers=BEARER(tokens[n % len(tokens)]))
            outcome = Outcome(
                now,
                n % len(tokens),
                response.status_code,
                time.monotonic() - begun,
                response.headers.get("Retry-After"),
            )
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AFTER_SECONDS)
    kill()
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + REQUEST_BOUND_SECONDS + 5)
        assert not thread.is_alive(), "a client thread hung"
    return outcomes


def assert_failover_was_answered(outcomes: list[Outcome], tokens: list[str]) -> None:
    """Only 200 or 503 + Retry-After (never a 401 for a valid token, never a 500), each in
    bounded time, and every token accepted again once the replica took over."""
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses
    assert all(o.retry_after and int(o.retry_after) > 0 for o in outcomes if o.status == 503)
    slowest = max(o.seconds for o in outcomes)
    assert slowest <= REQUEST_BOUND_SECONDS, f"a request took {slowest:.2f} s"
    last_failure = max((o.at for o in outcomes if o.status != 200), default=KILL_AFTER_SECONDS)
    assert last_failure - KILL_AFTER_SECONDS <= RECOVERY_BOUND_SECONDS, statuses
    recovered = {o.token for o in outcomes if o.at > last_failure and o.status == 200}
    assert recovered == set(range(len(tokens))), "a token that reached the replica was lost"
    print(
        f"failover: {dict(statuses)}, slowest {slowest:.2f} s, "
        f"503s for {max(0.0, last_failure - KILL_AFTER_SECONDS):.2f} s after the kill"
    )


def issue_tokens(app: Flask, primary: redis.Redis, count: int = 8) -> list[str]:
    """Log in ``count`` times, then wait until the replica has every write (WAIT)."""
    auth = AuthActions(app.test_client())
    tokens = [auth.login()["accessToken"] for _ in range(count)]
    assert primary.execute_command("WAIT", 1, 5000) >= 1
    return tokens


def node(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, decode_responses=True)


def topology_env(**environ: str) -> dict[str, str]:
    return {**DEV_ENV, "REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT), **environ}


@pytest.fixture(scope="module")
def doomed_sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(tmp_path_factory.mktemp("failover-sentinel"))
    yield group
    group.stop()


@pytest.fixture(scope="module")
def doomed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("failover-cluster"))
    yield cluster
    cluster.stop()


def test_sentinel_failover_under_load(doomed_sentinel_group):
    group = doomed_sentinel_group
    app = app_with_own_redis(topology_env(**group.environ))
    tokens = issue_tokens(app, node(group.primary))
    outcomes = run_load(app, tokens, kill=lambda: group.kill(group.primary))
    assert_failover_was_answered(outcomes, tokens)
    assert group.current_primary() == group.replica
    # writes go to the new primary: a fresh login, refresh and logout work without a restart
    auth = AuthActions(app.test_client())
    fresh = auth.login()
    refreshed = auth.client.get("/public/refresh", headers=BEARER(fresh["refreshToken"]))
    assert refreshed.status_code == 200


def test_cluster_failover_under_load(doomed_cluster):
    cluster = doomed_cluster
    app = app_with_own_redis(topology_env(REDIS_MODE="cluster", REDIS_URL=cluster.url))
    primary = cluster.primary_port_of("jwt:{kesa}:user")
    replica = cluster.replica_port_of(primary)
    tokens = issue_tokens(app, node(primary))
    outcomes = run_load(app, tokens, kill=lambda: cluster.kill(primary))
    assert_failover_was_answered(outcomes, tokens)
    assert cluster.primary_port_of("jwt:{kesa}:user") == replica
    auth = AuthActions(app.test_client())
    fresh = auth.login()
    refreshed = auth.client.get("/public/refresh", headers=BEARER(fresh["refreshToken"]))
    assert refreshed.status_code == 200


def test_two_instances_sharing_one_redis_see_revocation_at_once(redis_server, real_redis, tmp_path):
    """Two gunicorns on two ports, one Redis, a client alternating between them."""
    instances = []
    try:
        for name in ("a", "b"):
            env = server_env(
                APP_ENV="development",
                REDIS_URL=redis_server.url,
                PORT=str(free_port()),
                WEB_CONCURRENCY="1",
            )
            instances.append(start(GUNICORN, env, tmp_path / f"gunicorn-{name}.log"))
        a, b = instances
        tokens = a.login()
        bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert [s.request("/user/welcome", headers=bearer)[0] for s in (a, b, a, b)] == [200] * 4
        assert a.request("/user/logout", headers=bearer)[0] == 200
        assert b.request("/user/welcome", headers=bearer)[0] == 401  # the very next request
        # a refresh token spent through one instance is reuse at the other
        tokens = b.login()
        spent = {"Authorization": f"Bearer {tokens['refreshToken']}"}
        assert b.request("/public/refresh", headers=spent)[0] == 200
        assert a.request("/public/refresh", headers=spent)[0] == 401
    finally:
        for instance in instances:
            stop(instance)


def test_a_demoted_primary_is_left_for_the_new_one_without_a_failed_request(sentinel_group):
    """A manual failover leaves the old primary alive as a replica: the connections the app
    holds to it get READONLY on the next write, and that write must reach the new primary."""
    group = sentinel_group
    app = app_with_own_redis(topology_env(**group.environ))
    client = app.test_client()
    tokens = AuthActions(client).login()
    old = group.current_primary()
    node(group.sentinels[0]).execute_command("SENTINEL", "FAILOVER", SENTINEL_MASTER)
    wait_until(lambda: group.current_primary() != old, "the sentinels naming a new primary")
    wait_until(lambda: node(old).info("replication")["role"] == "slave", "the old one demoted")
    refreshed = client.get("/public/refresh", headers=BEARER(tokens["refreshToken"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    fresh = refreshed.get_json()["accessToken"]
    assert client.get("/user/welcome", headers=BEARER(fresh)).status_code == 200
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200
