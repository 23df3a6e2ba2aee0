"""SPEC's error table: JSON {code, message} everywhere, with the right headers."""

from __future__ import annotations

import signal
import time

import fakeredis
import pytest
import redis

from devtools.processes import free_port
from devtools.processes import wait_until
from initialize import create_app
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from tests.conftest import app_with_own_redis
from tests.conftest import start_redis_server

BEARER = AuthActions.bearer
KESA = {"username": "kesa", "password": "123"}
ZED = {"username": "zed", "password": "long-enough"}


def test_unknown_path_is_json_404(client):
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert response.get_json() == {"code": 404, "message": "No such path."}


def test_wrong_method_is_json_405_with_allow(client):
    response = client.put("/public/login")
    assert response.status_code == 405
    assert response.get_json()["code"] == 405
    assert "POST" in response.headers["Allow"]


def test_healthz_and_readyz(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_an_evicting_redis_is_not_ready_and_start_up_says_so(redis_server, real_redis, caplog):
    """SPEC: any maxmemory-policy but noeviction makes /readyz a 503 naming it."""
    real_redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        client = app_with_own_redis({**DEV_ENV, "REDIS_URL": redis_server.url}).test_client()
        response = client.get("/readyz")
        assert response.status_code == 503 and "allkeys-lru" in response.get_json()["message"]
        assert int(response.headers["Retry-After"]) > 0
        assert any(
            r.levelname == "ERROR" and "allkeys-lru" in r.getMessage() for r in caplog.records
        )
    finally:
        real_redis.config_set("maxmemory-policy", "noeviction")
    assert client.get("/readyz").status_code == 200


def test_a_redis_that_refuses_config_is_ready_with_a_warning(fake_redis, caplog):
    """fakeredis, like some managed services, has no CONFIG: checked as far as possible."""
    client = create_app(DEV_ENV, redis_client=fake_redis).test_client()
    assert client.get("/readyz").status_code == 200
    assert any("could not be checked" in r.getMessage() for r in caplog.records)


def test_jwks_is_404_under_hmac(client):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_security_headers_on_success_and_error(client):
    for response in (client.get("/public/ping"), client.get("/nowhere")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


class TestLoginLockout:
    def test_attempts_one_to_n_are_401_then_429_until_the_window_ends(self, make_app, redis_client):
        client = make_app(LOGIN_MAX_FAILURES="3", LOGIN_LOCK_SECONDS="60").test_client()
        bad = {"username": "kesa", "password": "nope"}
        assert [client.post("/public/login", data=bad).status_code for _ in range(3)] == [401] * 3
        locked = client.post("/public/login", data={"username": "kesa", "password": "123"})
        assert locked.status_code == 429
        assert 0 < int(locked.headers["Retry-After"]) <= 60
        assert locked.get_json()["code"] == 429
        # the counter lives in Redis with the lock window as its TTL
        (key,) = redis_client.keys("jwt:{kesa}:login-failures:*")
        assert 0 < redis_client.ttl(key) <= 60
        redis_client.delete(key)  # the window ends
        assert (
            client.post("/public/login", data={"username": "kesa", "password": "123"}).status_code
            == 200
        )

    def test_unknown_usernames_count_alike(self, make_app):
        client = make_app(LOGIN_MAX_FAILURES="2").test_client()
        ghost = {"username": "ghost", "password": "x"}
        assert [client.post("/public/login", data=ghost).status_code for _ in range(3)] == [
            401,
            401,
            429,
        ]

    def test_success_resets_and_counts_are_per_username_and_address(self, make_app):
        client = make_app(LOGIN_MAX_FAILURES="2").test_client()
        bad = {"username": "kesa", "password": "nope"}
        client.post("/public/login", data=bad)
        assert (
            client.post("/public/login", data={"username": "kesa", "password": "123"}).status_code
            == 200
        )
        assert [client.post("/public/login", data=bad).status_code for _ in range(2)] == [401, 401]
        other_address = {"REMOTE_ADDR": "10.9.9.9"}
        assert client.post("/public/login", data=bad, environ_base=other_address).status_code == 401

    def test_one_username_is_limited_across_every_address(self, make_app, redis_client):
        """Credential stuffing from many addresses: ACCOUNT_MAX_FAILURES counts them all."""
        client = make_app(LOGIN_MAX_FAILURES="5", ACCOUNT_MAX_FAILURES="3").test_client()
        for name in ("kesa", "ghost"):  # unknown usernames count alike
            bad = {"username": name, "password": "nope"}
            statuses = [
                client.post(
                    "/public/login", data=bad, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}
                ).status_code
                for n in range(4)
            ]
            assert statuses == [401, 401, 401, 429], name
        locked = client.post(
            "/public/login",
            data={"username": "kesa", "password": "123"},
            environ_base={"REMOTE_ADDR": "10.0.0.99"},
        )
        assert locked.status_code == 429 and locked.get_json()["code"] == 429
        assert 0 < int(locked.headers["Retry-After"]) <= 900
        key = "jwt:{kesa}:account-failures"
        assert 0 < redis_client.ttl(key) <= 900  # every counter expires with its window
        assert all(0 < redis_client.ttl(k) <= 900 for k in redis_client.keys("jwt:*failures*"))

    def test_a_success_resets_the_account_count(self, make_app):
        client = make_app(LOGIN_MAX_FAILURES="5", ACCOUNT_MAX_FAILURES="2").test_client()
        bad = {"username": "kesa", "password": "nope"}
        client.post("/public/login", data=bad, environ_base={"REMOTE_ADDR": "10.0.0.1"})
        good = client.post("/public/login", data={"username": "kesa", "password": "123"})
        assert good.status_code == 200
        statuses = [
            client.post(
                "/public/login", data=bad, environ_base={"REMOTE_ADDR": f"10.0.1.{n}"}
            ).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 429]


class TestRegistrationLimit:
    def test_every_attempt_from_one_address_counts_then_429(self, make_app, redis_client):
        client = make_app(REGISTER_MAX_PER_ADDRESS="3", REGISTER_WINDOW_SECONDS="120").test_client()
        attempts = [
            {"username": "newbie", "password": "a-long-password"},
            {"username": "newbie", "password": "a-long-password"},  # 409, but a hash was paid
            {"username": "other1", "password": "a-long-password"},
        ]
        statuses = [client.post("/public/register", data=body).status_code for body in attempts]
        assert statuses == [201, 409, 201]
        throttled = client.post(
            "/public/register", data={"username": "other2", "password": "a-long-password"}
        )
        assert throttled.status_code == 429 and throttled.get_json()["code"] == 429
        assert 0 < int(throttled.headers["Retry-After"]) <= 120
        assert not redis_client.exists("jwt:{other2}:user")  # nothing was created
        (key,) = redis_client.keys("jwt:{address:*}:registrations")
        assert key == "jwt:{address:127.0.0.1}:registrations"  # the address's own slot
        assert 0 < redis_client.ttl(key) <= 120
        other_address = {"REMOTE_ADDR": "10.1.2.3"}
        body = {"username": "other3", "password": "a-long-password"}
        assert client.post(
            "/public/register", data=body, environ_base=other_address
        ).status_code == (201)

    def test_bad_input_costs_no_hash_and_is_not_counted(self, make_app, redis_client):
        client = make_app(REGISTER_MAX_PER_ADDRESS="1").test_client()
        assert client.post("/public/register", data={"username": "x"}).status_code == 400
        assert redis_client.keys("jwt:{address:*") == []


class TestRedisDown:
    """503 + Retry-After whenever Redis does not answer, and no unrecorded token."""

    @pytest.fixture
    def down(self):
        server = fakeredis.FakeServer()
        app = create_app(
            DEV_ENV, redis_client=fakeredis.FakeRedis(server=server, decode_responses=True)
        )
        client = app.test_client()
        tokens = AuthActions(client).login()
        server.connected = False
        return client, tokens

    def assert_503(self, response):
        assert response.status_code == 503
        assert response.get_json()["code"] == 503
        assert int(response.headers["Retry-After"]) > 0

    def test_every_redis_route_answers_503(self, down):
        client, tokens = down
        self.assert_503(client.post("/public/login", data={"username": "kesa", "password": "123"}))
        self.assert_503(
            client.post("/public/register", data={"username": "zed", "password": "long-enough"})
        )
        self.assert_503(client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])))
        self.assert_503(client.get("/user/welcome", headers=BEARER(tokens["accessToken"])))
        self.assert_503(client.get("/public/feed", headers=BEARER(tokens["accessToken"])))
        self.assert_503(client.get("/user/logout", headers=BEARER(tokens["accessToken"])))
        self.assert_503(client.get("/readyz"))
        assert client.get("/healthz").status_code == 200
        assert client.get("/public/feed").status_code == 200  # anonymous needs no Redis

    def test_a_real_closed_port_is_503_too_and_the_app_still_starts(self):
        url = f"redis://127.0.0.1:{free_port()}/0"
        client = app_with_own_redis({**DEV_ENV, "REDIS_URL": url}).test_client()
        self.assert_503(client.post("/public/login", data={"username": "kesa", "password": "123"}))
        self.assert_503(client.get("/readyz"))

    @pytest.mark.parametrize(
        "environ",
        [
            {"REDIS_MODE": "sentinel", "REDIS_SENTINELS": f"127.0.0.1:{free_port()}"},
            {"REDIS_MODE": "cluster", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        ],
        ids=["no-sentinel-answers", "no-cluster-node-answers"],
    )
    def test_no_master_found_is_a_503_and_the_app_still_starts(self, environ):
        client = app_with_own_redis({**DEV_ENV, **environ}).test_client()
        self.assert_503(client.post("/public/login", data=KESA))
        self.assert_503(client.get("/readyz"))

    def test_a_paused_redis_is_a_503_within_the_socket_timeout(self, tmp_path):
        """A hung Redis (SIGSTOP) must not hang the worker: 503 once the timeout passes."""
        server = start_redis_server(tmp_path)
        try:
            app = app_with_own_redis(
                {**DEV_ENV, "REDIS_URL": server.url, "REDIS_SOCKET_TIMEOUT": "0.5"}
            )
            client = app.test_client()
            tokens = AuthActions(client).login()
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                self.assert_503(client.get("/user/welcome", headers=BEARER(tokens["accessToken"])))
                assert time.monotonic() - started < 1.5  # one timeout, never resent
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert (
                client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code
                == 200
            )
        finally:
            server.stop()

    def test_out_of_memory_under_noeviction_is_a_503_and_issues_nothing(self, tmp_path):
        """A write Redis refuses (OOM) is a 503; a script runs whole or not at all, since
        Redis checks memory at a script's first write only."""
        server = start_redis_server(tmp_path)
        try:
            client = app_with_own_redis({**DEV_ENV, "REDIS_URL": server.url}).test_client()
            bearer = BEARER(AuthActions(client).login()["accessToken"])
            admin = redis.Redis(port=server.port, decode_responses=True)
            keys_before = admin.dbsize()
            admin.config_set("maxmemory", "1")  # with noeviction, every write is refused
            try:
                self.assert_503(client.post("/public/login", data=KESA))
                self.assert_503(client.post("/public/register", data=ZED))
                assert admin.dbsize() == keys_before
                assert client.get("/user/welcome", headers=bearer).status_code == 200  # a read
            finally:
                admin.config_set("maxmemory", "0")
            assert client.post("/public/login", data=KESA).status_code == 200
        finally:
            server.stop()

    def test_demo_users_are_seeded_once_redis_returns(self):
        server = fakeredis.FakeServer()
        server.connected = False
        app = create_app(
            DEV_ENV, redis_client=fakeredis.FakeRedis(server=server, decode_responses=True)
        )
        client = app.test_client()
        assert client.post("/public/login", data=KESA).status_code == 503
        server.connected = True

        def seeded() -> bool:  # the background seeder's first retries are quick
            return client.post("/public/login", data=KESA).status_code == 200

        assert wait_until(seeded, timeout=10), "kesa was not created after Redis returned"


class TestCors:
    @pytest.fixture
    def cors_client(self, make_app):
        return make_app(CORS_ORIGINS="https://app.example, http://localhost:3000").test_client()

    def test_allowed_origin_gets_credentials_and_vary(self, cors_client):
        response = cors_client.get("/public/ping", headers={"Origin": "https://app.example"})
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in response.headers["Vary"]

    def test_preflight_lists_the_headers(self, cors_client):
        response = cors_client.options(
            "/user/welcome",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        )
        assert response.status_code == 200
        allowed = response.headers["Access-Control-Allow-Headers"]
        assert all(h in allowed for h in ("Authorization", "Content-Type", "X-CSRF-Token"))

    def test_other_origins_get_no_cors_but_vary_even_on_errors(self, cors_client):
        response = cors_client.get("/user/welcome", headers={"Origin": "https://evil.example"})
        assert response.status_code == 401
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Origin" in response.headers["Vary"]

    def test_errors_carry_cors_for_allowed_origins(self, cors_client):
        response = cors_client.get("/user/welcome", headers={"Origin": "https://app.example"})
        assert response.status_code == 401
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"

    def test_no_cors_headers_when_unset(self, client):
        response = client.get("/public/ping", headers={"Origin": "https://app.example"})
        assert "Access-Control-Allow-Origin" not in response.headers


def test_forwarded_for_counts_only_from_a_trusted_proxy(make_app, redis_client):
    client = make_app(LOGIN_MAX_FAILURES="1").test_client()
    bad = {"username": "kesa", "password": "nope"}
    via_proxy = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    client.post("/public/login", data=bad, headers=via_proxy)  # peer 127.0.0.1 is trusted
    assert redis_client.exists("jwt:{kesa}:login-failures:198.51.100.7")
    stranger = {"REMOTE_ADDR": "192.0.2.1"}
    client.post("/public/login", data=bad, headers=via_proxy, environ_base=stranger)
    assert redis_client.exists("jwt:{kesa}:login-failures:192.0.2.1")
