"""SPEC "Durable changes": a change answered 2xx is on the replicas, so it survives a failover.

Real topologies the tests start themselves (tests/redis_topologies.py): a replica is stalled
with SIGSTOP (alive and attached, acknowledging nothing), which makes the changes that wait for
it answer 503; resumed, they succeed; then the primary is killed and the promoted replica must
refuse what was logged out. Each group and cluster here is this module's own: it is left with a
dead node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from initialize.errors import NOT_REPLICATED_MESSAGE
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from tests.conftest import app_with_own_redis
from tests.redis_topologies import Cluster
from tests.redis_topologies import SentinelGroup
from tests.redis_topologies import start_cluster
from tests.redis_topologies import start_sentinel_group
from tests.redis_topologies import wait_until
from tests.test_observability import samples

BEARER = AuthActions.bearer
WAIT_TIMEOUT_MS = 500
# The 503 comes after WAIT's timeout, plus a round trip or two, never a socket timeout more.
SLOWEST_503_SECONDS = WAIT_TIMEOUT_MS / 1000 + 1.0
# With no replica to wait for, a change sends no WAIT (counted on the server) and takes less
# than WAIT's timeout.
PROMPT_SECONDS = 0.4
FAILOVER_SECONDS = 30.0
PASSWORD = "correct horse battery"


def durable_env(**environ: str) -> dict[str, str]:
    return {
        **DEV_ENV,
        "REDIS_SOCKET_TIMEOUT": "1",
        "REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS),
        **environ,
    }


def waits_sent(port: int) -> int:
    """How many WAIT commands the Redis on ``port`` has run."""
    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as node:
        return node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def timed(call) -> tuple[object, float]:
    begun = time.monotonic()
    result = call()
    return result, time.monotonic() - begun


def assert_not_confirmed(response, seconds: float) -> None:
    """A 503 that says the replicas did not confirm, in WAIT's time and not much more."""
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["message"] == NOT_REPLICATED_MESSAGE
    assert int(response.headers["Retry-After"]) > 0
    assert WAIT_TIMEOUT_MS / 1000 * 0.9 <= seconds <= SLOWEST_503_SECONDS, seconds


def answer_once_redis_is_back(client: FlaskClient, token: str) -> int:
    """The status of ``/user/welcome`` once the service reaches the new primary (503s until
    then, bounded in time)."""
    statuses: list[int] = []

    def answered() -> bool:
        statuses.append(client.get("/user/welcome", headers=BEARER(token)).status_code)
        return statuses[-1] != 503

    wait_until(answered, "the service answering from the promoted replica", FAILOVER_SECONDS)
    return statuses[-1]


def register(client: FlaskClient, username: str) -> None:
    response = client.post("/public/register", data={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.get_json()


@pytest.fixture(scope="module")
def stalling_sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(tmp_path_factory.mktemp("durable-sentinel"))
    yield group
    group.stop()


@pytest.fixture(scope="module")
def stalling_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("durable-cluster"))
    yield cluster
    cluster.stop()


def test_a_logout_answered_200_survives_a_sentinel_failover(stalling_sentinel_group):
    group = stalling_sentinel_group
    app = app_with_own_redis(durable_env(**group.environ))  # REDIS_WAIT_REPLICAS: default 1
    client = app.test_client()
    auth = AuthActions(client)
    waits = waits_sent(group.primary)
    confirmed, unconfirmed, kept = auth.login(), auth.login(), auth.login()
    refreshed = client.get("/public/refresh", headers=BEARER(kept["refreshToken"]))
    kept = refreshed.get_json()
    assert client.get("/user/welcome", headers=BEARER(kept["accessToken"])).status_code == 200
    assert waits_sent(group.primary) == waits  # logins, refreshes and requests never wait
    response, seconds = timed(
        lambda: client.post("/user/logout", headers=BEARER(confirmed["accessToken"]))
    )
    assert response.status_code == 200
    assert waits_sent(group.primary) == waits + 1  # the confirmed logout's, one

    with group.paused(group.replica):
        response, seconds = timed(
            lambda: client.post("/user/logout", headers=BEARER(unconfirmed["accessToken"]))
        )
        assert_not_confirmed(response, seconds)
        # the change is made on the primary: the token is refused there at once
        assert (
            client.get("/user/welcome", headers=BEARER(unconfirmed["accessToken"])).status_code
            == 401
        )
        # a registration waits too; logins, refreshes and reads do not, and /readyz is 200
        response, seconds = timed(
            lambda: client.post(
                "/public/register", data={"username": "stalled", "password": PASSWORD}
            )
        )
        assert_not_confirmed(response, seconds)
        response, seconds = timed(
            lambda: client.post(
                "/user/password",
                data={"password": "123", "newPassword": PASSWORD},
                headers=BEARER(kept["accessToken"]),
            )
        )
        assert_not_confirmed(response, seconds)
        created = app.test_cli_runner().invoke(
            args=["create-user", "from-cli", "--password", PASSWORD]
        )
        assert created.exit_code == 1
        assert "Redis made the change, but 0 of 1 replicas acknowledged" in created.output
        fresh = auth.login("kesa", PASSWORD)
        assert (
            client.get("/public/refresh", headers=BEARER(fresh["refreshToken"])).status_code == 200
        )
        assert client.get("/user/welcome", headers=BEARER(kept["accessToken"])).status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = samples(client)
        assert metrics[("redis_wait_timeouts_total", ())] == 3
        assert metrics.get(("redis_errors_total", ()), 0) == 0
        # a repeat through another instance (other connections) waits as well: the mark
        # makes the awaited write the latest even when the repeated change finds nothing to do
        other = app_with_own_redis(durable_env(**group.environ)).test_client()
        response, seconds = timed(
            lambda: other.post("/oauth/revoke", data={"token": unconfirmed["refreshToken"]})
        )
        assert_not_confirmed(response, seconds)
        assert response.get_json()["error"] == "temporarily_unavailable"

    # resumed: the repeats succeed, confirmed by the replica
    revoked = client.post("/oauth/revoke", data={"token": unconfirmed["refreshToken"]})
    assert revoked.status_code == 200
    response = client.post("/public/register", data={"username": "stalled", "password": PASSWORD})
    assert response.status_code == 409  # the first attempt made it; now it is on the replica
    assert (
        client.post("/user/logout", headers=BEARER(unconfirmed["accessToken"])).status_code == 401
    )

    group.kill(group.primary)
    wait_until(lambda: group.current_primary() == group.replica, "the replica promoted")
    assert answer_once_redis_is_back(client, kept["accessToken"]) == 200
    for logged_out in (confirmed, unconfirmed):
        assert (
            client.get("/user/welcome", headers=BEARER(logged_out["accessToken"])).status_code
            == 401
        )
        refresh = client.get("/public/refresh", headers=BEARER(logged_out["refreshToken"]))
        assert refresh.status_code == 401
    assert auth.login("stalled", PASSWORD)
    assert auth.login("kesa", PASSWORD)  # the password change, confirmed by the WAITs after it

    # a primary without replicas has no one to lose a change to: no WAIT, no delay
    waits = waits_sent(group.replica)
    response, seconds = timed(
        lambda: client.post("/user/logout", headers=BEARER(kept["accessToken"]))
    )
    assert response.status_code == 200 and seconds < PROMPT_SECONDS, seconds
    register(client, "after")
    assert waits_sent(group.replica) == waits


def test_a_stalled_shard_replica_holds_back_only_its_shards_changes(stalling_cluster):
    cluster = stalling_cluster
    app = app_with_own_redis(durable_env(REDIS_MODE="cluster", REDIS_URL=cluster.url))
    client = app.test_client()
    auth = AuthActions(client)
    primary = cluster.primary_port_of("jwt:{kesa}:user")
    replica = cluster.replica_port_of(primary)
    other = next(
        name
        for name in (f"user{n}" for n in range(100))
        if cluster.primary_port_of(f"jwt:{{{name}}}:user") != primary
    )
    register(client, other)  # waits for that shard's replica, which is running
    kesa = [auth.login() for _ in range(3)]
    theirs = [auth.login(other, PASSWORD) for _ in range(2)]

    with cluster.paused(replica):
        response, seconds = timed(
            lambda: client.post("/user/logout", headers=BEARER(kesa[0]["accessToken"]))
        )
        assert_not_confirmed(response, seconds)
        ended = client.delete(
            f"/user/sessions/{session_id(kesa[1])}", headers=BEARER(kesa[2]["accessToken"])
        )
        assert ended.status_code == 503
        # the other shard's user logs out as usual, at once
        response, seconds = timed(
            lambda: client.post("/user/logout", headers=BEARER(theirs[0]["accessToken"]))
        )
        assert response.status_code == 200 and seconds < PROMPT_SECONDS, seconds
        assert client.get("/readyz").status_code == 200

    wait_until(lambda: node_is_healthy(cluster, replica), "the resumed replica seen healthy")
    revoked = client.post("/oauth/revoke", data={"token": kesa[0]["accessToken"]})
    assert revoked.status_code == 200
    repeat = client.delete(
        f"/user/sessions/{session_id(kesa[1])}", headers=BEARER(kesa[2]["accessToken"])
    )
    assert repeat.status_code == 404  # ended by the first attempt; the 404 waited for it

    cluster.kill(primary)
    wait_until(
        lambda: cluster.primary_port_of("jwt:{kesa}:user") == replica and cluster.is_ok(),
        "the replica promoted",
        FAILOVER_SECONDS,
    )
    assert answer_once_redis_is_back(client, kesa[2]["accessToken"]) == 200
    for logged_out in (kesa[0], kesa[1]):
        assert (
            client.get("/user/welcome", headers=BEARER(logged_out["accessToken"])).status_code
            == 401
        )
    assert client.get("/user/welcome", headers=BEARER(theirs[0]["accessToken"])).status_code == 401
    assert client.get("/user/welcome", headers=BEARER(theirs[1]["accessToken"])).status_code == 200
    waits = waits_sent(replica)
    response, seconds = timed(
        lambda: client.post("/user/logout", headers=BEARER(kesa[2]["accessToken"]))
    )
    assert response.status_code == 200 and seconds < PROMPT_SECONDS, seconds
    assert waits_sent(replica) == waits


def session_id(tokens: dict) -> str:
    return jwt.decode(tokens["accessToken"], options={"verify_signature": False})["sid"]


def node_is_healthy(cluster: Cluster, port: int) -> bool:
    """No live node flags ``port`` as failing, and its link to its primary is up."""
    live = [p for p, process in cluster.processes.items() if process.poll() is None]
    for seen_by in live:
        nodes = redis.Redis(port=seen_by, decode_responses=True, socket_timeout=2)
        with nodes:
            for line in nodes.execute_command("CLUSTER", "NODES").splitlines():
                address, flags = line.split()[1:3]
                if address.split("@")[0].endswith(f":{port}") and "fail" in flags:
                    return False
    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as replica:
        return replica.info("replication")["master_link_status"] == "up"


def test_a_primary_without_replicas_answers_at_once(redis_server, real_redis):
    app: Flask = app_with_own_redis(
        durable_env(REDIS_URL=redis_server.url, REDIS_WAIT_REPLICAS="1")
    )
    client = app.test_client()
    tokens = AuthActions(client).login()
    real_redis.script_flush()  # and a Redis that lost the scripts: EVAL, on the same connection
    real_redis.config_resetstat()
    response, seconds = timed(
        lambda: client.post("/user/logout", headers=BEARER(tokens["accessToken"]))
    )
    assert response.status_code == 200 and seconds < PROMPT_SECONDS, seconds
    assert waits_sent(redis_server.port) == 0
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
    assert real_redis.exists("jwt:{kesa}:replicated") == 1
    assert 0 < real_redis.ttl("jwt:{kesa}:replicated") <= 60
