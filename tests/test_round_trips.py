"""Redis round trips per request, counted on the wire so they cannot creep up unnoticed."""

from __future__ import annotations

import pytest
import redis

from initialize import create_app
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from tests.conftest import ClosedAfterTest

BEARER = AuthActions.bearer


class CountingConnection(ClosedAfterTest):
    """Counts what is sent: one send is one round trip (a pipeline sends once)."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def counting_app(redis_server, **environ: str):
    pool = redis.ConnectionPool(
        connection_class=CountingConnection,
        host="127.0.0.1",
        port=redis_server.port,
        decode_responses=True,
    )
    return create_app({**DEV_ENV, **environ}, redis_client=redis.Redis(connection_pool=pool))


@pytest.fixture
def counted(redis_server, real_redis):
    """What each request costs when it asks Redis (the allowlist cache off)."""
    client = counting_app(redis_server, ALLOWLIST_CACHE_SECONDS="0").test_client()
    # Warm up: each Lua script is loaded into Redis on its first use (a NOSCRIPT miss).
    tokens = AuthActions(client).login()
    client.get("/public/refresh", headers=BEARER(tokens["refreshToken"]))
    client.post("/user/logout", headers=BEARER(tokens["accessToken"]))
    tokens = AuthActions(client).login()

    def round_trips(method: str, path: str, **kwargs) -> int:
        CountingConnection.sends = 0
        response = client.open(path, method=method, **kwargs)
        assert response.status_code < 400, response.get_json()
        return CountingConnection.sends

    return round_trips, tokens


def test_an_authenticated_request_costs_one_round_trip(counted):
    round_trips, tokens = counted
    headers = BEARER(tokens["accessToken"])
    assert round_trips("GET", "/user/welcome", headers=headers) == 1
    assert round_trips("GET", "/public/feed", headers=headers) == 1
    assert round_trips("GET", "/public/feed") == 0
    assert round_trips("POST", "/user/publish", headers=headers, data={"title": "t"}) == 1


def test_with_the_allowlist_cache_a_known_token_costs_no_round_trip(redis_server, real_redis):
    client = counting_app(redis_server).test_client()
    tokens = AuthActions(client).login()
    headers = BEARER(tokens["accessToken"])
    for _ in range(3):  # the tracking connection opens; the token's own writes are reported
        assert client.get("/user/welcome", headers=headers).status_code == 200
    CountingConnection.sends = 0
    assert client.get("/user/welcome", headers=headers).status_code == 200
    assert client.get("/public/feed", headers=headers).status_code == 200
    assert CountingConnection.sends == 0
    assert client.post("/user/logout", headers=headers).status_code == 200
    CountingConnection.sends = 0
    assert client.get("/user/welcome", headers=headers).status_code == 401
    assert CountingConnection.sends == 1  # forgotten: Redis is asked, and says no


def test_login_reads_once_and_writes_once(counted):
    round_trips, _ = counted
    assert round_trips("POST", "/public/login", data={"username": "kesa", "password": "123"}) == 2


def test_refresh_is_one_atomic_round_trip(counted):
    round_trips, tokens = counted
    assert round_trips("GET", "/public/refresh", headers=BEARER(tokens["refreshToken"])) == 1


def test_logout_verifies_then_revokes(counted):
    round_trips, tokens = counted
    assert round_trips("POST", "/user/logout", headers=BEARER(tokens["accessToken"])) == 2


def test_requests_reuse_connections(redis_server, real_redis):
    """No new Redis connection per request: the hot paths keep their connections open."""
    client = create_app(
        DEV_ENV,
        redis_client=redis.Redis.from_url(
            redis_server.url, decode_responses=True, connection_class=ClosedAfterTest
        ),
    ).test_client()
    tokens = AuthActions(client).login()
    # the first check opens the worker's one tracking connection (the allowlist cache)
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200

    def connections_opened() -> int:
        return int(real_redis.info("stats")["total_connections_received"])

    before = connections_opened()
    for _ in range(20):
        assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200
        tokens = client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).get_json()
        assert "accessToken" in tokens
    tokens = AuthActions(client).login()
    assert client.post("/user/logout", headers=BEARER(tokens["accessToken"])).status_code == 200
    assert connections_opened() == before


def test_session_routes_read_ids_then_run_one_script(counted):
    round_trips, tokens = counted
    headers = BEARER(tokens["accessToken"])
    round_trips("GET", "/user/sessions", headers=headers)  # loads the script
    assert round_trips("GET", "/user/sessions", headers=headers) == 3  # check, ids, records
    first = {"password": "123", "newPassword": "a-new-password"}
    round_trips("POST", "/user/password", headers=headers, data=first)  # loads the script
    again = {"password": "a-new-password", "newPassword": "another-password"}
    # the check, the login counter's script, the session ids, the change's script
    assert round_trips("POST", "/user/password", headers=headers, data=again) == 4


def test_oauth_grants_cost_what_login_and_refresh_cost(counted):
    round_trips, _ = counted
    grant = {"grant_type": "password", "username": "kesa", "password": "123"}
    assert round_trips("POST", "/oauth/token", data=grant) == 2
