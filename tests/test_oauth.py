"""/oauth: RFC 6749 token endpoint, RFC 7009 revocation, RFC 7662 introspection."""

from __future__ import annotations

import base64

import fakeredis
import pytest

from initialize import create_app
from initialize.config import ConfigError
from initialize.config import load_settings
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from utils.auth import is_configured_client

BEARER = AuthActions.bearer
CLIENT = ("resource-api", "introspection-secret-0123")
CLIENTS_ENV = {"INTROSPECTION_CLIENTS": f"{CLIENT[0]}:{CLIENT[1]}"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def password_grant(client, username: str = "kesa", password: str = "123"):
    return client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


def refresh_grant(client, refresh_token: str):
    return client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def assert_oauth_error(response, status: int, error: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error
    assert body["code"] == status
    assert body["message"] == body["error_description"]


def test_password_grant_answers_rfc6749_tokens(client):
    response = password_grant(client)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert (body["token_type"], body["expires_in"], body["refresh_expires_in"]) == (
        "Bearer",
        900,
        604800,
    )
    welcome = client.get("/user/welcome", headers=BEARER(body["access_token"]))
    assert welcome.data == b"Welcome ! kesa"


def test_client_id_is_accepted_and_ignored(client):
    response = client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "kesa", "password": "123", "client_id": "x"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(("username", "password"), [("kesa", "wrong-one"), ("nobody", "123")])
def test_bad_credentials_are_invalid_grant_with_one_body(client, username, password):
    response = password_grant(client, username, password)
    assert_oauth_error(response, 400, "invalid_grant")
    assert response.get_json()["message"] == "Please provide valid login details."


def test_password_grant_shares_the_login_throttle(make_app):
    client = make_app(LOGIN_MAX_FAILURES="2").test_client()
    client.post("/public/login", data={"username": "kesa", "password": "wrong"})
    assert_oauth_error(password_grant(client, password="wrong"), 400, "invalid_grant")
    locked = password_grant(client)
    assert_oauth_error(locked, 429, "temporarily_unavailable")  # SPEC: both shapes here too
    assert int(locked.headers["Retry-After"]) > 0
    assert client.post(
        "/public/login", data={"username": "kesa", "password": "123"}
    ).status_code == (429)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "kesa"}, "invalid_request"),
        ({"grant_type": "password", "username": "a b", "password": "123"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "not.a.token"}, "invalid_grant"),
    ],
)
def test_malformed_token_requests(client, data, error):
    assert_oauth_error(client.post("/oauth/token", data=data), 400, error)


def test_a_json_body_is_not_a_token_request(client):
    response = client.post(
        "/oauth/token", json={"grant_type": "password", "username": "kesa", "password": "123"}
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_refresh_grant_rotates_and_detects_reuse(client):
    first = password_grant(client).get_json()
    second = refresh_grant(client, first["refresh_token"])
    assert second.status_code == 200
    pair = second.get_json()
    assert client.get("/user/welcome", headers=BEARER(pair["access_token"])).status_code == 200
    reused = refresh_grant(client, first["refresh_token"])
    assert_oauth_error(reused, 400, "invalid_grant")
    # Reuse is theft: the whole session ended, the new pair included.
    assert client.get("/user/welcome", headers=BEARER(pair["access_token"])).status_code == 401
    assert_oauth_error(refresh_grant(client, pair["refresh_token"]), 400, "invalid_grant")


def test_refresh_grant_and_public_refresh_are_one_rotation(client):
    tokens = password_grant(client).get_json()
    public = client.post("/public/refresh", headers=BEARER(tokens["refresh_token"]))
    assert public.status_code == 200
    assert_oauth_error(refresh_grant(client, tokens["refresh_token"]), 400, "invalid_grant")
    assert (
        client.get("/user/welcome", headers=BEARER(public.get_json()["accessToken"])).status_code
        == 401
    )


def test_an_access_token_is_no_refresh_grant(client):
    tokens = password_grant(client).get_json()
    assert_oauth_error(refresh_grant(client, tokens["access_token"]), 400, "invalid_grant")


def test_oauth_endpoints_answer_503_when_redis_is_down():
    server = fakeredis.FakeServer()
    redis_client = fakeredis.FakeRedis(server=server, decode_responses=True)
    client = create_app({**DEV_ENV, **CLIENTS_ENV}, redis_client=redis_client).test_client()
    tokens = password_grant(client).get_json()
    server.connected = False
    for response in (
        password_grant(client),
        refresh_grant(client, tokens["refresh_token"]),
        client.post("/oauth/revoke", data={"token": tokens["access_token"]}),
        client.post(
            "/oauth/introspect", data={"token": tokens["access_token"]}, headers=basic(*CLIENT)
        ),
    ):
        assert_oauth_error(response, 503, "temporarily_unavailable")
        assert int(response.headers["Retry-After"]) > 0
        assert "access_token" not in response.get_json()


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
def test_revoking_either_token_ends_its_session_only(client, kind):
    revoked = password_grant(client).get_json()
    other = password_grant(client).get_json()
    response = client.post("/oauth/revoke", data={"token": revoked[kind]})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/user/welcome", headers=BEARER(revoked["access_token"])).status_code == 401
    assert_oauth_error(refresh_grant(client, revoked["refresh_token"]), 400, "invalid_grant")
    assert client.get("/user/welcome", headers=BEARER(other["access_token"])).status_code == 200


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 10_000])
def test_revoking_an_invalid_token_is_still_200(client, token):
    live = password_grant(client).get_json()
    response = client.post("/oauth/revoke", data={"token": token, "token_type_hint": "nonsense"})
    assert response.status_code == 200
    assert client.get("/user/welcome", headers=BEARER(live["access_token"])).status_code == 200


def test_revoke_without_a_token_is_invalid_request(client):
    assert_oauth_error(client.post("/oauth/revoke", data={}), 400, "invalid_request")


def test_introspection_is_absent_without_clients(client):
    response = client.post("/oauth/introspect", data={"token": "x"}, headers=basic(*CLIENT))
    assert response.status_code == 404
    assert response.get_json() == {"code": 404, "message": "No such path."}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(CLIENT[0], "wrong-secret-0123456"),
        basic("someone-else", CLIENT[1]),
        BEARER("x"),
        {"Authorization": "Basic !!!"},
    ],
)
def test_introspection_needs_a_configured_client(make_app, headers):
    client = make_app(**CLIENTS_ENV).test_client()
    response = client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_introspection_of_live_and_ended_tokens(make_app):
    client = make_app(JWT_AUDIENCE="api.example", **CLIENTS_ENV).test_client()
    tokens = password_grant(client).get_json()

    def introspect(token: str) -> dict:
        response = client.post("/oauth/introspect", data={"token": token}, headers=basic(*CLIENT))
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        return response.get_json()

    access = introspect(tokens["access_token"])
    assert access["active"] is True
    assert access["token_type"] == "access_token"
    assert access["sub"] == access["username"] == "kesa"
    assert access["iss"] == "jwt-demo"
    assert access["aud"] == "api.example"
    assert access["exp"] - access["iat"] == 900
    assert {"jti", "sid"} <= set(access)
    refresh = introspect(tokens["refresh_token"])
    assert refresh["token_type"] == "refresh_token"
    assert refresh["sid"] == access["sid"]
    assert refresh["jti"] != access["jti"]

    client.post("/user/logout", headers=BEARER(tokens["access_token"]))
    assert introspect(tokens["access_token"]) == {"active": False}
    assert introspect(tokens["refresh_token"]) == {"active": False}
    assert introspect("garbage") == {"active": False}


def test_introspection_without_a_token_is_invalid_request(make_app):
    client = make_app(**CLIENTS_ENV).test_client()
    response = client.post("/oauth/introspect", data={}, headers=basic(*CLIENT))
    assert_oauth_error(response, 400, "invalid_request")


def test_client_check_matches_exact_pairs_only():
    clients = (("a-client", "secret-aaaaaaaaaaaa"), ("b-client", "secret-bbbbbbbbbbbb"))
    assert is_configured_client("a-client", "secret-aaaaaaaaaaaa", clients)
    assert is_configured_client("b-client", "secret-bbbbbbbbbbbb", clients)
    assert not is_configured_client("a-client", "secret-bbbbbbbbbbbb", clients)
    assert not is_configured_client("a-client", "secret-aaaaaaaaaaa", clients)
    assert not is_configured_client(None, None, clients)
    assert not is_configured_client("a-client", "secret-aaaaaaaaaaaa", ())


def test_introspection_clients_setting():
    settings = load_settings(
        {
            **DEV_ENV,
            "INTROSPECTION_CLIENTS": " a-client:secret-aaaaaaaaaaaa , b:secret-bbbbbbbbbbbb",
        }
    )
    assert settings.introspection_clients == (
        ("a-client", "secret-aaaaaaaaaaaa"),
        ("b", "secret-bbbbbbbbbbbb"),
    )
    assert load_settings(DEV_ENV).introspection_clients == ()


@pytest.mark.parametrize(
    "raw",
    [
        "no-secret",
        "a:tiny1",
        "a:secret with spaces!",
        ":secret-aaaaaaaaaaaa",
        "a:b:c%2Fdddddddddddddd",
    ],
)
def test_bad_introspection_clients_name_the_variable_not_the_secret(raw):
    with pytest.raises(ConfigError) as caught:
        load_settings({**DEV_ENV, "INTROSPECTION_CLIENTS": raw})
    assert caught.value.variable == "INTROSPECTION_CLIENTS"
    secret = raw.partition(":")[2]
    assert not secret or secret not in str(caught.value)
