"""``/admin/users`` (SPEC "Administration"): who may call it, every route and its rules, on
fakeredis for the rules and on every Redis topology (fakeredis, a redis-server, a Cluster, a
Sentinel group) for what the operations do to Redis."""

from __future__ import annotations

import base64
import json

import fakeredis
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis.cluster import RedisCluster

from initialize import create_app
from initialize.config import ConfigError
from initialize.config import load_settings
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from utils.passwords import hash_password
from utils.state import get_metrics

ADMIN_ID, ADMIN_SECRET = "ops", "ops-secret-0123456789"
ADMIN_CLIENTS = f"{ADMIN_ID}:{ADMIN_SECRET},backup:backup-secret-0123456"
BEARER = AuthActions.bearer
CHALLENGE = 'Basic realm="flask-jwt-redis admin"'
ALICE = {"username": "alice", "password": "alice-password"}
# Every route, with a user that exists (kesa) where it takes one.
ROUTES = [
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/kesa"),
    ("DELETE", "/admin/users/kesa"),
    ("DELETE", "/admin/users/kesa/sessions"),
    ("DELETE", "/admin/users/kesa/sessions/some-session"),
    ("POST", "/admin/users/kesa/disable"),
    ("POST", "/admin/users/kesa/enable"),
    ("POST", "/admin/users/kesa/unlock"),
    ("POST", "/admin/users/kesa/password"),
]
USER_ROUTES = [(method, path) for method, path in ROUTES if "/kesa" in path]


def basic(client_id: str = ADMIN_ID, secret: str = ADMIN_SECRET) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic()


def sid_of(tokens: dict) -> str:
    return jwt.decode(tokens["accessToken"], options={"verify_signature": False})["sid"]


def login(client: FlaskClient, credentials: dict = ALICE, address: str = "127.0.0.1"):
    return client.post("/public/login", data=credentials, environ_base={"REMOTE_ADDR": address})


def user_keys(redis_client, username: str) -> list[str]:
    """Every key of the user and an earlier version's account key, SCANned on every node (a
    cluster client's scan_iter visits each primary)."""
    return sorted(
        {
            *redis_client.scan_iter(match=f"jwt:{{{username}}}*", count=1000),
            *redis_client.scan_iter(match=f"jwt:user:{username}", count=1000),
        }
    )


@pytest.fixture
def fake_app(fake_redis) -> Flask:
    return create_app({**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS}, redis_client=fake_redis)


@pytest.fixture
def admin_app(make_app) -> Flask:
    """The development app with admin clients, on each Redis topology."""
    return make_app(ADMIN_CLIENTS=ADMIN_CLIENTS, LOG_FORMAT="json")


# --------------------------------------------------------------------------- who may call


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_is_an_unknown_path_without_admin_clients(fake_redis, method, path):
    client = create_app(DEV_ENV, redis_client=fake_redis).test_client()
    response = client.open(path, method=method, headers=ADMIN, json={"newPassword": "x" * 12})
    assert response.status_code == 404
    assert response.get_json() == {"code": 404, "message": "No such path."}
    assert "WWW-Authenticate" not in response.headers
    assert login(client, {"username": "kesa", "password": "123"}).status_code == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_is_an_unknown_path_from_an_address_not_allowed(fake_app, method, path):
    response = fake_app.test_client().open(
        path, method=method, headers=ADMIN, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert (response.status_code, response.get_json()["message"]) == (404, "No such path.")


def test_admin_allow_ips_takes_networks_and_star(fake_redis):
    for allowed, address, status in (
        ("192.0.2.0/24", "192.0.2.7", 200),
        ("192.0.2.0/24", "127.0.0.1", 404),
        ("*", "198.51.100.1", 200),
        ("2001:db8::/32", "2001:db8::5", 200),
    ):
        app = create_app(
            {**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS, "ADMIN_ALLOW_IPS": allowed},
            redis_client=fake_redis,
        )
        response = app.test_client().get(
            "/admin/users", headers=ADMIN, environ_base={"REMOTE_ADDR": address}
        )
        assert response.status_code == status, (allowed, address)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(fake_redis):
    app = create_app(
        {**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS, "FORWARDED_ALLOW_IPS": "192.0.2.1"},
        redis_client=fake_redis,
    )
    client = app.test_client()

    def status(peer: str, forwarded: str) -> int:
        return client.get(
            "/admin/users",
            headers={**ADMIN, "X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": peer},
        ).status_code

    assert status("192.0.2.1", "127.0.0.1") == 200  # the trusted proxy speaks for a local client
    assert status("192.0.2.1", "198.51.100.9") == 404  # ... or for a remote one
    assert status("198.51.100.9", "127.0.0.1") == 404  # anyone else's header is ignored
    assert status("127.0.0.1", "198.51.100.9") == 200  # not trusted here: the peer counts


def test_a_wrong_method_does_not_reveal_the_routes(fake_redis, fake_app):
    hidden = create_app(DEV_ENV, redis_client=fake_redis).test_client()
    assert hidden.put("/admin/users", headers=ADMIN).status_code == 404
    outside = fake_app.test_client().put(
        "/admin/users/kesa", headers=ADMIN, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert outside.status_code == 404
    assert fake_app.test_client().put("/admin/users", headers=ADMIN).status_code == 405


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(secret="ops-secret-0123456780"),
        basic(secret=ADMIN_SECRET[:-1]),
        basic(client_id="backup"),  # another client's id with this secret
        basic(client_id="nobody"),
        {"Authorization": "Bearer " + ADMIN_SECRET},
        {"Authorization": "Basic !!!not-base64"},
    ],
    ids=["none", "wrong", "prefix", "other-id", "unknown-id", "bearer", "garbled"],
)
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_the_credentials_of_a_client_every_route_is_401(fake_app, headers, method, path):
    response = fake_app.test_client().open(path, method=method, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert response.get_json()["code"] == 401


def test_introspection_clients_are_not_admin_clients(fake_redis):
    app = create_app(
        {
            **DEV_ENV,
            "ADMIN_CLIENTS": ADMIN_CLIENTS,
            "INTROSPECTION_CLIENTS": "rs:rs-secret-0123456789",
        },
        redis_client=fake_redis,
    )
    client = app.test_client()
    assert (
        client.get("/admin/users", headers=basic("rs", "rs-secret-0123456789")).status_code == 401
    )
    assert (
        client.get("/admin/users", headers=basic("backup", "backup-secret-0123456")).status_code
        == 200
    )


@pytest.mark.parametrize("variable", ["ADMIN_CLIENTS", "INTROSPECTION_CLIENTS"])
@pytest.mark.parametrize("raw", ["no-secret", "a:tiny1", "a:secret with spaces!", ":s" * 9])
def test_bad_clients_name_the_variable_not_the_secret(variable, raw):
    with pytest.raises(ConfigError) as caught:
        load_settings({**DEV_ENV, variable: raw})
    assert caught.value.variable == variable
    secret = raw.partition(":")[2]
    assert not secret or secret not in str(caught.value)


def test_admin_settings_and_their_defaults():
    settings = load_settings({**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS})
    assert settings.admin_clients == (
        (ADMIN_ID, ADMIN_SECRET),
        ("backup", "backup-secret-0123456"),
    )
    assert [str(n) for n in settings.admin_allow_ips] == ["127.0.0.1/32", "::1/128"]
    assert load_settings(DEV_ENV).admin_clients == ()
    with pytest.raises(ConfigError) as caught:
        load_settings({**DEV_ENV, "ADMIN_ALLOW_IPS": "localhost"})
    assert caught.value.variable == "ADMIN_ALLOW_IPS"


# --------------------------------------------------------------------------- input rules


@pytest.mark.parametrize(("method", "path"), USER_ROUTES)
@pytest.mark.parametrize("name", ["nobody", "no", "x" * 33, "semi;colon", "star*", "br{ace}"])
def test_an_unknown_user_is_404_and_nothing_is_written(fake_app, fake_redis, method, path, name):
    before = sorted(fake_redis.keys("*"))
    response = fake_app.test_client().open(
        path.replace("kesa", name), method=method, headers=ADMIN, json={"newPassword": "x" * 12}
    )
    assert response.status_code == 404
    assert response.get_json()["message"] in ("No such user.", "No such path.")
    assert sorted(fake_redis.keys("*")) == before


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"username": "alice"}},
        {"json": {"username": "alice", "password": "short"}},
        {"json": {"username": "a", "password": "alice-password"}},
        {"json": {"username": "alice", "password": 12345678}},
        {"json": ["alice", "alice-password"]},
        {"data": "not json", "content_type": "application/json"},
        {"data": {"username": "alice", "password": "x" * 129}},
    ],
)
def test_create_refuses_bad_bodies_and_writes_nothing(fake_app, fake_redis, body):
    before = sorted(fake_redis.keys("*"))
    response = fake_app.test_client().post("/admin/users", headers=ADMIN, **body)
    assert response.status_code == 400
    assert set(response.get_json()) == {"code", "message"}
    assert sorted(fake_redis.keys("*")) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"json": {"newPassword": "short"}},
        {"json": {"newPassword": None}},
        {"json": {"password": "long-enough-1"}},
        {"data": {"newPassword": "x" * 129}},
    ],
)
def test_set_password_refuses_bad_bodies_and_changes_nothing(fake_app, body):
    client = fake_app.test_client()
    tokens = login(client, {"username": "kesa", "password": "123"}).get_json()
    response = client.post("/admin/users/kesa/password", headers=ADMIN, **body)
    assert response.status_code == 400
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200
    assert login(client, {"username": "kesa", "password": "123"}).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        *("limit=0", "limit=1001", "limit=ten", "limit=-1", "limit=%205", "limit=%D9%A3"),
        "limit=" + "9" * 5000,  # past int()'s digit limit: still a 400
        *(
            "cursor=x",
            "cursor=16384-0",
            f"cursor=0-{2**64}",
            "cursor=0-1-a",
            "cursor=0-0-" + "x" * 33,
        ),
    ],
)
def test_listing_refuses_a_bad_limit_or_cursor(fake_app, query):
    response = fake_app.test_client().get(f"/admin/users?{query}", headers=ADMIN)
    assert response.status_code == 400, query


def test_bodies_may_be_json_or_form(fake_app):
    client = fake_app.test_client()
    assert client.post("/admin/users", headers=ADMIN, data=ALICE).status_code == 201
    bob = {"username": "bob", "password": "bob-password"}
    assert client.post("/admin/users", headers=ADMIN, json=bob).status_code == 201
    assert client.post("/admin/users", headers=ADMIN, json=bob).status_code == 409
    form = {"newPassword": "alice-password-2"}
    assert client.post("/admin/users/alice/password", headers=ADMIN, data=form).status_code == 200
    assert login(client, {"username": "alice", "password": "alice-password-2"}).status_code == 200


# --------------------------------------------------------------------------- the operations


def test_create_show_and_list(admin_app, redis_client):
    client = admin_app.test_client()
    created = client.post("/admin/users", headers=ADMIN, json=ALICE)
    assert (created.status_code, created.get_json()) == (201, {"username": "alice"})
    assert client.post("/admin/users", headers=ADMIN, json=ALICE).status_code == 409
    first = login(client, address="192.0.2.10").get_json()
    login(client, address="192.0.2.11")
    shown = client.get("/admin/users/alice", headers=ADMIN)
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    body = shown.get_json()
    assert set(body) == {"username", "createdAt", "disabled", "sessions"}
    assert body["username"] == "alice" and body["disabled"] is False and body["createdAt"] > 0
    assert {s["clientAddress"] for s in body["sessions"]} == {"192.0.2.10", "192.0.2.11"}
    assert sid_of(first) in {s["id"] for s in body["sessions"]}
    assert all("current" not in s for s in body["sessions"])
    listed = client.get("/admin/users", headers=ADMIN).get_json()
    assert sorted(listed["users"]) == ["alice", "kesa"] and listed["next"] is None


def test_end_one_session_and_every_session(admin_app):
    client = admin_app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE)
    one, two, three = (login(client).get_json() for _ in range(3))
    kesa = login(client, {"username": "kesa", "password": "123"}).get_json()
    path = f"/admin/users/alice/sessions/{sid_of(one)}"
    assert client.delete(path, headers=ADMIN).get_json() == {"ended": sid_of(one)}
    assert client.delete(path, headers=ADMIN).status_code == 404  # no longer live
    other_users = f"/admin/users/alice/sessions/{sid_of(kesa)}"
    assert client.delete(other_users, headers=ADMIN).status_code == 404
    assert client.get("/user/welcome", headers=BEARER(one["accessToken"])).status_code == 401
    assert client.get("/user/welcome", headers=BEARER(two["accessToken"])).status_code == 200
    ended = client.delete("/admin/users/alice/sessions", headers=ADMIN)
    assert ended.get_json() == {"endedSessions": 2}
    for tokens in (two, three):
        assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
        assert (
            client.post("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code
            == 401
        )
    assert client.get("/user/welcome", headers=BEARER(kesa["accessToken"])).status_code == 200
    assert client.get("/admin/users/alice", headers=ADMIN).get_json()["sessions"] == []
    assert login(client).status_code == 200  # not disabled: a new login works


def test_disable_then_enable(admin_app):
    client = admin_app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE)
    tokens, other = login(client).get_json(), login(client).get_json()
    disabled = client.post("/admin/users/alice/disable", headers=ADMIN)
    assert disabled.get_json() == {"username": "alice", "disabled": True, "endedSessions": 2}
    for pair in (tokens, other):
        assert client.get("/user/welcome", headers=BEARER(pair["accessToken"])).status_code == 401
        assert (
            client.post("/public/refresh", headers=BEARER(pair["refreshToken"])).status_code == 401
        )
    refused = login(client)
    assert (refused.status_code, refused.get_json()["message"]) == (403, "The account is disabled.")
    assert login(client, {**ALICE, "password": "wrong-password"}).status_code == 401
    grant = client.post("/oauth/token", data={"grant_type": "password", **ALICE})
    assert grant.status_code == 403
    assert grant.get_json()["error"] == "invalid_grant"
    assert client.get("/admin/users/alice", headers=ADMIN).get_json()["disabled"] is True
    again = client.post("/admin/users/alice/disable", headers=ADMIN).get_json()
    assert again["endedSessions"] == 0
    enabled = client.post("/admin/users/alice/enable", headers=ADMIN)
    assert enabled.get_json() == {"username": "alice", "disabled": False}
    assert login(client).status_code == 200


def test_set_password_ends_every_session(admin_app):
    client = admin_app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE)
    tokens = login(client).get_json()
    response = client.post(
        "/admin/users/alice/password", headers=ADMIN, json={"newPassword": "alice-password-2"}
    )
    assert response.get_json() == {"endedSessions": 1}
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
    assert login(client).status_code == 401
    assert login(client, {**ALICE, "password": "alice-password-2"}).status_code == 200


def test_unlock_clears_every_address_count_and_the_accounts(make_app, redis_client):
    app = make_app(ADMIN_CLIENTS=ADMIN_CLIENTS, LOGIN_MAX_FAILURES="2", ACCOUNT_MAX_FAILURES="8")
    client = app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE)
    wrong = {**ALICE, "password": "wrong-password"}
    for address in ("192.0.2.1", "2001:db8::1"):
        statuses = [login(client, wrong, address).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        assert login(client, ALICE, address).status_code == 429
    assert login(client, ALICE, "198.51.100.1").status_code == 429  # the account's count
    assert client.post("/admin/users/alice/unlock", headers=ADMIN).get_json() == {
        "username": "alice"
    }
    assert [k for k in user_keys(redis_client, "alice") if "failures" in k] == []
    for address in ("192.0.2.1", "2001:db8::1", "198.51.100.1"):
        assert login(client, ALICE, address).status_code == 200


def test_delete_leaves_no_key_behind(admin_app, redis_client):
    client = admin_app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE)
    first = login(client, address="192.0.2.1").get_json()
    second = login(client, address="192.0.2.2").get_json()
    client.post("/public/refresh", headers=BEARER(first["refreshToken"]))  # a spent marker
    login(client, {**ALICE, "password": "wrong-password"}, "192.0.2.3")  # a failure count
    kinds = {key.split(":")[2] for key in user_keys(redis_client, "alice")}
    assert {"user", "sessions", "session", "session-meta", "token", "spent"} <= kinds
    assert "login-failures" in kinds
    kesa_keys = user_keys(redis_client, "kesa")

    assert client.delete("/admin/users/alice", headers=ADMIN).get_json() == {"deleted": "alice"}
    assert user_keys(redis_client, "alice") == []
    assert user_keys(redis_client, "kesa") == kesa_keys
    for tokens in (first, second):
        assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
    assert client.get("/admin/users/alice", headers=ADMIN).status_code == 404
    assert client.delete("/admin/users/alice", headers=ADMIN).status_code == 404
    assert login(client).status_code == 401
    again = client.post("/public/register", data=ALICE)  # the name is free again
    assert again.status_code == 201 and login(client).status_code == 200


def test_an_account_of_an_earlier_version_is_listed_shown_and_deleted(admin_app, redis_client):
    redis_client.hset("jwt:user:oldtimer", mapping={"password": hash_password("old-password")})
    client = admin_app.test_client()
    assert "oldtimer" in client.get("/admin/users", headers=ADMIN).get_json()["users"]
    assert client.get("/admin/users/oldtimer", headers=ADMIN).status_code == 200
    assert client.delete("/admin/users/oldtimer", headers=ADMIN).status_code == 200
    assert user_keys(redis_client, "oldtimer") == []


def test_listing_pages_through_every_account_once(admin_app, redis_client):
    """1,200 accounts (written directly) in pages of 7 and of 500: each listed once, every page
    within its limit; in a cluster they live on every primary."""
    names = {f"user-{number:04d}" for number in range(1200)}
    pipe = redis_client.pipeline(transaction=False)
    for name in names:
        pipe.hset(f"jwt:{{{name}}}:user", mapping={"password": "not-a-hash", "created": 1})
        pipe.set(f"jwt:{{{name}}}:login-failures:192.0.2.1", 1, ex=60)  # keys that are not accounts
    pipe.execute()
    names.add("kesa")
    client = admin_app.test_client()
    nodes = set()
    for limit in (7, 500):
        listed, cursor, pages = [], "", 0
        while cursor is not None:
            page = client.get(f"/admin/users?limit={limit}&cursor={cursor}", headers=ADMIN)
            assert page.status_code == 200, page.get_json()
            body = page.get_json()
            assert len(body["users"]) <= limit
            listed += body["users"]
            cursor, pages = body["next"], pages + 1
            nodes.add(cursor and cursor.split("-")[0])
            assert pages <= len(names)
        assert sorted(listed) == sorted(names), limit
    if isinstance(redis_client, RedisCluster):  # the cursor named each primary in turn
        primaries = redis_client.get_primaries()
        assert len(nodes - {None}) == len(primaries) == 3
    default = client.get("/admin/users", headers=ADMIN).get_json()
    assert len(default["users"]) == 100 and default["next"]


# --------------------------------------------------------------------------- audit


def test_every_change_is_audited_with_admin_and_user_and_counted(fake_redis, capsys):
    app = create_app(
        {**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS, "LOG_FORMAT": "json"}, redis_client=fake_redis
    )
    client = app.test_client()
    client.post("/admin/users", headers=ADMIN, json=ALICE, environ_base={"REMOTE_ADDR": "::1"})
    sid = sid_of(login(client).get_json())
    login(client)
    steps = [
        ("DELETE", f"/admin/users/alice/sessions/{sid}", None),
        ("DELETE", "/admin/users/alice/sessions", None),
        ("POST", "/admin/users/alice/disable", None),
        ("POST", "/admin/users/alice/enable", None),
        ("POST", "/admin/users/alice/unlock", None),
        ("POST", "/admin/users/alice/password", {"newPassword": "alice-password-2"}),
        ("DELETE", "/admin/users/alice", None),
    ]
    for method, path, body in steps:
        assert client.open(path, method=method, headers=ADMIN, json=body).status_code == 200
    output = capsys.readouterr().out
    events = [line for line in map(json.loads, output.splitlines()) if "admin" in line]
    assert [event["event"] for event in events] == [
        "admin_user_created",
        "admin_session_ended",
        "admin_sessions_ended",
        "user_disabled",
        "user_enabled",
        "user_unlocked",
        "admin_password_set",
        "user_deleted",
    ]
    assert all(e["admin"] == ADMIN_ID and e["user"] == "alice" for e in events)
    assert events[0]["client"] == "::1" and events[1]["sid"] == sid
    assert all(e["request_id"] for e in events)
    assert "alice-password" not in output and ADMIN_SECRET not in output
    with app.app_context():
        exposition = get_metrics().render()[0].decode()
    for event in events:
        assert f'auth_events_total{{event="{event["event"]}"}} 1.0' in exposition


def test_nothing_unchanged_is_audited(fake_app, capsys):
    client = fake_app.test_client()
    client.get("/admin/users", headers=ADMIN)
    client.get("/admin/users/kesa", headers=ADMIN)
    client.post("/admin/users/nobody/disable", headers=ADMIN)
    assert '"admin"' not in capsys.readouterr().out


def test_a_redis_outage_is_a_503(fake_redis):
    server = fakeredis.FakeServer()
    client_redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    app = create_app({**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS}, redis_client=client_redis)
    server.connected = False
    for method, path in ROUTES:
        response = app.test_client().open(
            path, method=method, headers=ADMIN, json={**ALICE, "newPassword": "x" * 12}
        )
        assert response.status_code == 503, path
        assert "Retry-After" in response.headers
