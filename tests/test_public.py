"""/public: ping, register, login, refresh and feed, on fakeredis and on redis-server."""

from __future__ import annotations

import jwt
import pytest

from tests.conftest import AuthActions
from utils.passwords import hash_password

BEARER = AuthActions.bearer


def test_ping_is_plain_pong(client):
    response = client.get("/public/ping")
    assert response.status_code == 200
    assert response.data == b"pong"
    assert response.mimetype == "text/plain"


def test_login_by_form_returns_tokens_not_cached(client):
    response = client.post("/public/login", data={"username": "kesa", "password": "123"})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "accessToken",
        "refreshToken",
        "tokenType",
        "expiresIn",
        "refreshExpiresIn",
    }
    assert body["tokenType"] == "Bearer"
    assert (body["expiresIn"], body["refreshExpiresIn"]) == (900, 604800)
    assert response.headers["Cache-Control"] == "no-store"


def test_login_by_json(client):
    response = client.post("/public/login", json={"username": "kesa", "password": "123"})
    assert response.status_code == 200
    assert response.get_json()["accessToken"].count(".") == 2


def test_token_payload_carries_the_spec_claims(auth):
    tokens = auth.login()
    access = jwt.decode(tokens["accessToken"], options={"verify_signature": False})
    refresh = jwt.decode(tokens["refreshToken"], options={"verify_signature": False})
    for claims, kind in ((access, "access"), (refresh, "refresh")):
        assert claims["username"] == "kesa"
        assert claims["type"] == kind
        assert claims["uuid"] == claims["jti"]
        assert claims["iss"] == "jwt-demo"
        assert claims["exp"] > claims["iat"]
    assert access["exp"] - access["iat"] == 900
    assert refresh["exp"] - refresh["iat"] == 604800
    assert access["csrf"] == refresh["csrf"]
    assert access["jti"] != refresh["jti"]
    assert jwt.get_unverified_header(tokens["accessToken"])["alg"] == "HS256"


def test_configured_ttls_and_audience_flow_into_tokens(make_app):
    client = make_app(
        ACCESS_TOKEN_TTL="60", REFRESH_TOKEN_TTL="120", JWT_AUDIENCE="api"
    ).test_client()
    body = AuthActions(client).login()
    assert (body["expiresIn"], body["refreshExpiresIn"]) == (60, 120)
    claims = jwt.decode(body["accessToken"], options={"verify_signature": False})
    assert claims["aud"] == "api"
    assert client.get("/user/welcome", headers=BEARER(body["accessToken"])).status_code == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "kesa", "password": "wrong"},
        {"username": "nobody", "password": "123"},
    ],
)
def test_bad_credentials_get_one_answer(client, fields):
    response = client.post("/public/login", data=fields)
    assert response.status_code == 401
    assert response.get_json() == {"code": 401, "message": "Please provide valid login details."}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flask-jwt-redis"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {}},
        {"data": {"username": "kesa"}},
        {"data": {"password": "123"}},
        {"data": {"username": "k", "password": "123"}},
        {"data": {"username": "kesa!", "password": "123"}},
        {"data": {"username": "kesa", "password": "x" * 129}},
        {"json": {"username": 1, "password": "123"}},
        {"json": ["kesa", "123"]},
        {"json": {"username": "kesa", "password": "\ud800"}},
        {"data": "{not json", "content_type": "application/json"},
    ],
)
def test_malformed_login_is_400(client, kwargs):
    response = client.post("/public/login", **kwargs)
    assert response.status_code == 400
    assert response.get_json()["code"] == 400


def test_register_then_login(client, auth):
    response = client.post("/public/register", data={"username": "alice", "password": "s3cret-pw"})
    assert response.status_code == 201
    assert response.get_json() == {"username": "alice"}
    assert auth.login("alice", "s3cret-pw")["tokenType"] == "Bearer"


def test_register_by_json_stores_a_hash_not_the_password(client, redis_client):
    assert (
        client.post(
            "/public/register", json={"username": "bob", "password": "pw-123456"}
        ).status_code
        == 201
    )
    stored = redis_client.hgetall("jwt:{bob}:user")
    assert stored["password"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "pw-123456" not in str(stored)
    assert redis_client.ttl("jwt:{bob}:user") == -1  # accounts are the one thing without TTL


def test_register_taken_username_is_409(client):
    fields = {"username": "carol", "password": "long-enough"}
    assert client.post("/public/register", data=fields).status_code == 201
    response = client.post("/public/register", data={**fields, "password": "other-password"})
    assert response.status_code == 409
    assert (
        client.post(
            "/public/register", data={"username": "kesa", "password": "whatever1"}
        ).status_code
        == 409
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "dave", "password": "short"},
        {"username": "da", "password": "long-enough"},
        {"username": "x" * 33, "password": "long-enough"},
        {"username": "dave", "password": "x" * 129},
        {"username": "dave dave", "password": "long-enough"},
    ],
)
def test_register_rules_are_400(client, fields):
    assert client.post("/public/register", data=fields).status_code == 400


def test_refresh_by_get_and_by_post(client, auth):
    first = auth.login()
    second = client.get("/public/refresh", headers=BEARER(first["refreshToken"]))
    assert second.status_code == 200
    assert second.headers["Cache-Control"] == "no-store"
    third = client.post("/public/refresh", data={"token": second.get_json()["refreshToken"]})
    assert third.status_code == 200
    new_access = third.get_json()["accessToken"]
    assert client.get("/user/welcome", headers=BEARER(new_access)).data == b"Welcome ! kesa"


def test_refresh_keeps_the_session(client, auth):
    first = auth.login()
    second = client.get("/public/refresh", headers=BEARER(first["refreshToken"])).get_json()
    sid = lambda token: jwt.decode(token, options={"verify_signature": False})["sid"]  # noqa: E731
    assert sid(second["accessToken"]) == sid(first["accessToken"])


def test_refresh_token_reuse_ends_the_whole_session(client, auth):
    first = auth.login()
    other_session = auth.login()
    second = client.get("/public/refresh", headers=BEARER(first["refreshToken"])).get_json()
    replay = client.get("/public/refresh", headers=BEARER(first["refreshToken"]))
    assert replay.status_code == 401
    assert 'error="invalid_token"' in replay.headers["WWW-Authenticate"]
    # Everything issued from that login is dead: the original access token and the rotated pair.
    for token in (first["accessToken"], second["accessToken"]):
        assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401
    assert client.get("/public/refresh", headers=BEARER(second["refreshToken"])).status_code == 401
    # The user's other session lives on.
    assert (
        client.get("/user/welcome", headers=BEARER(other_session["accessToken"])).status_code == 200
    )
    assert (
        client.get("/public/refresh", headers=BEARER(other_session["refreshToken"])).status_code
        == 200
    )


def test_access_token_cannot_refresh_and_refresh_token_cannot_welcome(client, auth):
    tokens = auth.login()
    response = client.get("/public/refresh", headers=BEARER(tokens["accessToken"]))
    assert response.status_code == 401
    assert client.get("/user/welcome", headers=BEARER(tokens["refreshToken"])).status_code == 401


def test_refresh_without_token_is_401_without_error_code(client):
    response = client.get("/public/refresh")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flask-jwt-redis"'


def test_feed_anonymous_and_logged_in(client, auth):
    anonymous = client.get("/public/feed")
    assert anonymous.status_code == 200
    assert anonymous.get_json()["user"] is None
    assert anonymous.get_json()["items"]
    tokens = auth.login()
    assert (
        client.get("/public/feed", headers=BEARER(tokens["accessToken"])).get_json()["user"]
        == "kesa"
    )
    assert client.get(f"/public/feed?token={tokens['accessToken']}").get_json()["user"] == "kesa"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "Bearer"])
def test_feed_with_a_bad_token_is_401_not_anonymous(client, token):
    response = client.get("/public/feed", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_feed_with_a_revoked_token_is_401(client, auth):
    tokens = auth.login()
    client.get("/user/logout", headers=BEARER(tokens["accessToken"]))
    assert client.get("/public/feed", headers=BEARER(tokens["accessToken"])).status_code == 401


def test_feed_with_a_non_bearer_authorization_header_is_401(client):
    response = client.get("/public/feed", headers={"Authorization": "Basic a2VzYToxMjM="})
    assert response.status_code == 401


def test_an_account_from_before_the_upgrade_still_logs_in(client, redis_client):
    """Earlier versions stored accounts at ``jwt:user:<name>``; the first login moves it."""
    legacy = {"password": hash_password("olga-password"), "created": "1"}
    redis_client.hset("jwt:user:olga", mapping=legacy)
    login = {"username": "olga", "password": "olga-password"}
    assert client.post("/public/login", data=login).status_code == 200
    assert redis_client.hgetall("jwt:{olga}:user") == legacy
    assert client.post("/public/login", data=login).status_code == 200
