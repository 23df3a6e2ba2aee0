"""Hostile input: oversized and malformed tokens, odd login fields, and a property-based fuzz.

Each case gets SPEC's status and never a 5xx; the fuzz also checks that Redis is unchanged.
(Forged signatures, alg none, key confusion and CSRF live in test_jwt, test_keys and
test_token_lookup; tokens in the access log in test_server.)
"""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from initialize import create_app
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions

BEARER = AuthActions.bearer


@pytest.mark.parametrize("size", [10_000, 100_000])
@pytest.mark.parametrize("place", ["header", "query", "cookie", "form"])
def test_oversized_tokens_are_401(client, size, place):
    token = "eyJ" + "a" * size
    if place == "header":
        response = client.get("/user/welcome", headers=BEARER(token))
    elif place == "query":
        response = client.get(f"/user/welcome?token={token}")
    elif place == "cookie":
        response = client.get("/user/welcome", headers={"Cookie": f"jwt={token}"})
    else:
        response = client.post("/user/publish", data={"token": token, "title": "t"})
    assert response.status_code == 401
    assert response.get_json()["code"] == 401


@pytest.mark.parametrize(
    "body",
    [
        {"username": "kēsa", "password": "123"},
        {"username": "kesa\u0000", "password": "123"},
        {"username": "x" * 10_000, "password": "123"},
        {"username": "kesa", "password": "p" * 10_000},
        {"username": None, "password": "123"},
        {"username": ["kesa"], "password": "123"},
        {"username": {"$ne": ""}, "password": "123"},
        {"username": "kesa", "password": 123},
        {"username": "kesa", "password": True},
        {"username": "kesa"},
    ],
)
@pytest.mark.parametrize("route", ["/public/login", "/public/register"])
def test_odd_login_fields_are_400_and_change_nothing(client, redis_client, route, body):
    before = sorted(redis_client.keys("*"))
    response = client.post(route, json=body)
    assert response.status_code == 400
    assert sorted(redis_client.keys("*")) == before


def test_unicode_passwords_work(client, auth):
    fields = {"username": "unicode_user", "password": "密码-пароль-🔑"}
    assert client.post("/public/register", json=fields).status_code == 201
    assert auth.login(**fields)["tokenType"] == "Bearer"


def test_unknown_user_and_wrong_password_cost_one_hash_each(client, monkeypatch):
    import utils.passwords as passwords

    calls = []
    real_hasher = passwords._HASHER

    class CountingHasher:
        def verify(self, hash_, password):
            calls.append(hash_)
            return real_hasher.verify(hash_, password)

    monkeypatch.setattr(passwords, "_HASHER", CountingHasher())
    wrong = client.post("/public/login", data={"username": "kesa", "password": "bad"})
    unknown = client.post("/public/login", data={"username": "nobody", "password": "bad"})
    assert wrong.get_json() == unknown.get_json()
    assert len(calls) == 2
    assert calls[1] == passwords._DUMMY_HASH  # the same Argon2id work for a missing user
    assert calls[0].split("$")[3] == calls[1].split("$")[3]  # same m, t, p parameters


# ------------------------------------------------------------------ property-based fuzzing

PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
SEGMENT = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"),
    max_size=80,
)
TOKENS = st.one_of(
    PRINTABLE,
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", SEGMENT, SEGMENT, SEGMENT),
    st.builds(lambda b, c: f"eyJhbGciOiJIUzI1NiJ9.{b}.{c}", SEGMENT, SEGMENT),
    st.builds(lambda b: f"eyJhbGciOiJub25lIn0.{b}.", SEGMENT),
)
ROUTES = st.sampled_from(
    [
        ("GET", "/user/welcome"),
        ("GET", "/public/feed"),
        ("GET", "/public/refresh"),
        ("POST", "/public/refresh"),
        ("POST", "/user/logout"),
        ("POST", "/user/logout-all"),
        ("POST", "/user/publish"),
    ]
)


def snapshot(client: fakeredis.FakeRedis) -> dict:
    state = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == "string":
            state[key] = client.get(key)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = kind
    return state


@pytest.fixture(scope="module")
def fuzz_target():
    redis_client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    app = create_app(DEV_ENV, redis_client=redis_client)
    client = app.test_client()
    tokens = AuthActions(client).login()  # a live session the fuzz must not disturb
    return app, redis_client, tokens


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=ROUTES,
    token=TOKENS,
    place=st.sampled_from(["header", "raw-authorization", "query", "cookie", "form", "all"]),
    csrf=st.one_of(st.none(), PRINTABLE),
    form=st.dictionaries(PRINTABLE, PRINTABLE, max_size=4),
)
def test_arbitrary_tokens_and_bodies_never_5xx_and_never_change_redis(
    fuzz_target, route, token, place, csrf, form
):
    app, redis_client, tokens = fuzz_target
    client = app.test_client()
    before = snapshot(redis_client)
    method, path = route
    headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
    query = {}
    data = dict(form) if method == "POST" else None
    if place in ("header", "all"):
        headers["Authorization"] = f"Bearer {token}"
    if place == "raw-authorization":
        headers["Authorization"] = token
    if place in ("query", "all"):
        query["token"] = token
    if place in ("cookie", "all"):
        client.set_cookie("jwt", token)
        client.set_cookie("jwt_refresh", token)
    if place in ("form", "all") and data is not None:
        data["token"] = token
    response = client.open(path, method=method, headers=headers, query_string=query, data=data)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json or response.status_code == 200
    if path != "/public/feed" or response.status_code != 200:
        assert response.status_code in (401, 403, 400, 413), response.get_json()
    assert snapshot(redis_client) == before
    # the real session is untouched
    welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
    assert welcome.status_code == 200


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.dictionaries(PRINTABLE, PRINTABLE, max_size=4), PRINTABLE))
def test_arbitrary_login_and_register_bodies_never_5xx(fuzz_target, body):
    app, _, _ = fuzz_target
    client = app.test_client()
    for path in ("/public/login", "/public/register"):
        if isinstance(body, dict):
            response = client.post(path, data=body)
        else:
            response = client.post(path, data=body, content_type="application/json")
        assert response.status_code < 500
        assert response.is_json
