"""/user: welcome, logout, logout-all and publish behind an access token."""

from __future__ import annotations

import io

import pytest

from tests.conftest import AuthActions

BEARER = AuthActions.bearer


def test_welcome_greets_the_user_in_plain_text(client, auth):
    response = client.get("/user/welcome", headers=BEARER(auth.login()["accessToken"]))
    assert response.status_code == 200
    assert response.data == b"Welcome ! kesa"
    assert response.mimetype == "text/plain"


def test_welcome_without_token_is_401(client):
    response = client.get("/user/welcome")
    assert response.status_code == 401
    assert response.get_json() == {"code": 401, "message": "A token is required."}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flask-jwt-redis"'


@pytest.mark.parametrize("method", ["get", "post"])
def test_logout_revokes_the_session_access_and_refresh(client, auth, method):
    tokens = auth.login()
    response = getattr(client, method)("/user/logout", headers=BEARER(tokens["accessToken"]))
    assert response.status_code == 200
    assert response.data == b"Logout success"
    welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
    assert welcome.status_code == 401
    assert 'error="invalid_token"' in welcome.headers["WWW-Authenticate"]
    assert client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code == 401


def test_logout_leaves_other_sessions_alone(client, auth):
    mine, other = auth.login(), auth.login()
    client.get("/user/logout", headers=BEARER(mine["accessToken"]))
    assert client.get("/user/welcome", headers=BEARER(other["accessToken"])).status_code == 200


def test_logout_after_refresh_revokes_the_rotated_pair(client, auth):
    first = auth.login()
    second = client.get("/public/refresh", headers=BEARER(first["refreshToken"])).get_json()
    assert client.get("/user/logout", headers=BEARER(second["accessToken"])).status_code == 200
    assert client.get("/user/welcome", headers=BEARER(first["accessToken"])).status_code == 401
    assert client.get("/public/refresh", headers=BEARER(second["refreshToken"])).status_code == 401


def test_logout_all_ends_every_session(client, auth):
    sessions = [auth.login() for _ in range(3)]
    response = client.post("/user/logout-all", headers=BEARER(sessions[0]["accessToken"]))
    assert response.status_code == 200
    assert response.get_json()["sessions"] == 3
    for tokens in sessions:
        assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
        assert (
            client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code == 401
        )
    assert (
        client.get("/user/logout-all", headers=BEARER(sessions[0]["accessToken"])).status_code
        == 405
    )


def test_logout_all_spares_other_users(client, auth):
    client.post("/public/register", data={"username": "erin", "password": "erin-password"})
    erin = auth.login("erin", "erin-password")
    kesa = auth.login()
    client.post("/user/logout-all", headers=BEARER(kesa["accessToken"]))
    assert client.get("/user/welcome", headers=BEARER(erin["accessToken"])).status_code == 200


def test_publish_with_the_token_in_the_form_and_a_file(client, auth):
    token = auth.login()["accessToken"]
    response = client.post(
        "/user/publish",
        data={"token": token, "title": "my video", "data": (io.BytesIO(b"x" * 1000), "v.mp4")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert response.get_json() == {"user": "kesa", "title": "my video", "bytes": 1000}


def test_publish_without_a_file_counts_zero_bytes(client, auth):
    token = auth.login()["accessToken"]
    response = client.post(
        "/user/publish", data={"token": token, "title": "t"}, content_type="multipart/form-data"
    )
    assert response.get_json()["bytes"] == 0


def test_publish_without_title_is_400(client, auth):
    token = auth.login()["accessToken"]
    response = client.post(
        "/user/publish", data={"token": token}, content_type="multipart/form-data"
    )
    assert response.status_code == 400


def test_publish_without_token_is_401(client):
    response = client.post("/user/publish", data={"title": "t"}, content_type="multipart/form-data")
    assert response.status_code == 401


def test_publish_over_the_body_limit_is_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH="2048").test_client()
    token = AuthActions(client).login()["accessToken"]
    response = client.post(
        "/user/publish",
        data={"token": token, "title": "big", "data": (io.BytesIO(b"x" * 4096), "v.mp4")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert response.get_json() == {"code": 413, "message": "The request body is too large."}
