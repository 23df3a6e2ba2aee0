"""Sessions people can see and end, password changes, the session cap and the reuse grace."""

from __future__ import annotations

import time

import jwt
import pytest

from devtools.processes import wait_until
from tests.conftest import AuthActions

BEARER = AuthActions.bearer


def login(client, user_agent: str = "pytest", username: str = "kesa", password: str = "123"):
    response = client.post(
        "/public/login",
        data={"username": username, "password": password},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def next_second() -> None:
    """Wait until the clock enters a new second: session times have second resolution, so
    what happens after this is stamped later than what happened before."""
    started = int(time.time())
    assert wait_until(lambda: int(time.time()) > started, timeout=2, interval=0.01)


def sid_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["sid"]


def list_sessions(client, access_token: str) -> list[dict]:
    response = client.get("/user/sessions", headers=BEARER(access_token))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()["sessions"]


def works(client, tokens: dict) -> tuple[bool, bool]:
    """Whether the access token is accepted, and whether its refresh token still is (spent)."""
    access = client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code
    refresh = client.post("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code
    return access == 200, refresh == 200


def test_sessions_lists_each_login_newest_first_with_its_client(client):
    laptop = login(client, "Laptop browser")
    next_second()
    phone = login(client, "Phone app " + "x" * 400)
    sessions = list_sessions(client, phone["accessToken"])
    assert [s["id"] for s in sessions] == [
        sid_of(phone["accessToken"]),
        sid_of(laptop["accessToken"]),
    ]
    newest, oldest = sessions
    assert (newest["current"], oldest["current"]) == (True, False)
    assert newest["userAgent"] == ("Phone app " + "x" * 400)[:256]
    assert oldest["userAgent"] == "Laptop browser"
    assert newest["clientAddress"] == "127.0.0.1"
    refresh_exp = jwt.decode(phone["refreshToken"], options={"verify_signature": False})["exp"]
    assert newest["expiresAt"] == refresh_exp
    assert newest["createdAt"] == newest["refreshedAt"] > oldest["createdAt"]
    assert set(newest) == {
        "id",
        "current",
        "createdAt",
        "refreshedAt",
        "expiresAt",
        "clientAddress",
        "userAgent",
    }
    # The other session's token sees the same list, with itself marked current.
    assert [s["current"] for s in list_sessions(client, laptop["accessToken"])] == [False, True]


def test_a_refresh_updates_refreshed_at_and_the_client_not_created_at(client):
    tokens = login(client, "first agent")
    next_second()
    refreshed = client.post(
        "/public/refresh",
        headers={**BEARER(tokens["refreshToken"]), "User-Agent": "second agent"},
    ).get_json()
    (session,) = list_sessions(client, refreshed["accessToken"])
    assert session["refreshedAt"] > session["createdAt"]
    assert session["userAgent"] == "second agent"
    new_exp = jwt.decode(refreshed["refreshToken"], options={"verify_signature": False})["exp"]
    assert session["expiresAt"] == new_exp


def test_ending_another_session_revokes_its_tokens_at_once(client):
    mine, other = login(client), login(client)
    other_sid = sid_of(other["accessToken"])
    response = client.delete(f"/user/sessions/{other_sid}", headers=BEARER(mine["accessToken"]))
    assert response.status_code == 200
    assert response.get_json() == {"ended": other_sid}
    assert works(client, other) == (False, False)
    assert [s["id"] for s in list_sessions(client, mine["accessToken"])] == [
        sid_of(mine["accessToken"])
    ]
    assert works(client, mine) == (True, True)


def test_ending_the_current_session_is_a_logout(client):
    tokens = login(client)
    sid = sid_of(tokens["accessToken"])
    assert (
        client.delete(f"/user/sessions/{sid}", headers=BEARER(tokens["accessToken"])).status_code
        == 200
    )
    assert works(client, tokens) == (False, False)


def test_unknown_ended_or_foreign_sessions_are_404_and_change_nothing(client):
    client.post("/public/register", data={"username": "alice", "password": "alice-password"})
    alice = login(client, username="alice", password="alice-password")
    kesa = login(client)
    headers = BEARER(kesa["accessToken"])
    alice_sid = sid_of(alice["accessToken"])
    for session_id in (alice_sid, "no-such-session", "x" * 300, "%00"):
        response = client.delete(f"/user/sessions/{session_id}", headers=headers)
        assert response.status_code == 404
        assert response.get_json()["code"] == 404
    assert works(client, alice) == (True, True)
    ended = login(client)
    ended_sid = sid_of(ended["accessToken"])
    assert client.delete(f"/user/sessions/{ended_sid}", headers=headers).status_code == 200
    assert client.delete(f"/user/sessions/{ended_sid}", headers=headers).status_code == 404


def test_session_routes_need_an_access_token(client):
    tokens = login(client)
    sid = sid_of(tokens["accessToken"])
    assert client.get("/user/sessions").status_code == 401
    assert client.get("/user/sessions", headers=BEARER(tokens["refreshToken"])).status_code == 401
    assert client.delete(f"/user/sessions/{sid}").status_code == 401
    assert works(client, tokens) == (True, True)


def test_cookie_requests_need_the_csrf_header_to_end_a_session_or_change_the_password(make_app):
    client = make_app(COOKIE_MODE="true").test_client()
    tokens, other = AuthActions(client).oauth_login(), AuthActions(client).oauth_login()
    csrf = jwt.decode(other["accessToken"], options={"verify_signature": False})["csrf"]
    client.set_cookie("jwt", other["accessToken"])
    target = sid_of(tokens["accessToken"])
    assert client.delete(f"/user/sessions/{target}").status_code == 403
    change = {"password": "123", "newPassword": "a-new-password"}
    assert client.post("/user/password", data=change).status_code == 403
    assert len(client.get("/user/sessions").get_json()["sessions"]) == 2  # nothing ended
    ended = client.delete(f"/user/sessions/{target}", headers={"X-CSRF-Token": csrf})
    assert ended.status_code == 200
    assert works(client, tokens) == (False, False)
    assert login(client, password="123")  # and the password did not change


def test_password_change_ends_the_other_sessions_and_keeps_the_callers(client):
    mine, second, third = login(client), login(client), login(client)
    response = client.post(
        "/user/password",
        data={"password": "123", "newPassword": "a-better-password"},
        headers=BEARER(mine["accessToken"]),
    )
    assert response.status_code == 200
    assert response.get_json() == {"endedSessions": 2}
    assert works(client, second) == (False, False)
    assert works(client, third) == (False, False)
    assert client.get("/user/welcome", headers=BEARER(mine["accessToken"])).status_code == 200
    old = client.post("/public/login", data={"username": "kesa", "password": "123"})
    assert old.status_code == 401
    assert login(client, password="a-better-password")["tokenType"] == "Bearer"


def test_password_change_by_json(client):
    tokens = login(client)
    response = client.post(
        "/user/password",
        json={"password": "123", "newPassword": "a-json-password"},
        headers=BEARER(tokens["accessToken"]),
    )
    assert response.get_json() == {"endedSessions": 0}
    assert login(client, password="a-json-password")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"password": "123"},
        {"password": "123", "newPassword": "short"},
        {"password": "123", "newPassword": "x" * 129},
        {"password": "", "newPassword": "long-enough-password"},
    ],
)
def test_malformed_password_changes_are_400_and_change_nothing(client, body):
    tokens, other = login(client), login(client)
    response = client.post("/user/password", data=body, headers=BEARER(tokens["accessToken"]))
    assert response.status_code == 400
    assert works(client, other) == (True, True)
    assert login(client, password="123")


def test_a_wrong_current_password_counts_as_a_failed_login(make_app):
    client = make_app(LOGIN_MAX_FAILURES="2").test_client()
    tokens, other = login(client), login(client)
    wrong = {"password": "not-it", "newPassword": "a-new-password"}
    headers = BEARER(tokens["accessToken"])
    statuses = [
        client.post("/user/password", data=wrong, headers=headers).status_code for _ in range(2)
    ]
    assert statuses == [401, 401]
    locked = client.post(
        "/user/password", data={"password": "123", "newPassword": "a-new-password"}, headers=headers
    )
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert (
        client.post("/public/login", data={"username": "kesa", "password": "123"}).status_code
        == 429
    )
    assert works(client, other) == (True, True)


def test_logins_beyond_the_cap_end_the_least_recently_refreshed_session(make_app):
    client = make_app(MAX_SESSIONS_PER_USER="2").test_client()
    first = login(client)
    next_second()
    second = login(client)
    next_second()
    first = client.post("/public/refresh", headers=BEARER(first["refreshToken"])).get_json()
    next_second()
    third = login(client)
    assert works(client, second) == (False, False)
    sessions = list_sessions(client, third["accessToken"])
    assert {s["id"] for s in sessions} == {
        sid_of(first["accessToken"]),
        sid_of(third["accessToken"]),
    }


def test_reuse_within_the_grace_window_gets_a_pair_in_the_same_session(make_app):
    client = make_app(REFRESH_REUSE_GRACE_SECONDS="1").test_client()
    tokens = login(client)
    headers = BEARER(tokens["refreshToken"])
    first = client.post("/public/refresh", headers=headers)
    spent_by = int(time.time())  # the refresh token was spent at this second or before
    again = client.post("/public/refresh", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert sid_of(again.get_json()["accessToken"]) == sid_of(tokens["accessToken"])
    assert len(list_sessions(client, again.get_json()["accessToken"])) == 1
    # Past the 1 s window (whole seconds since the spending, as the store counts them).
    assert wait_until(lambda: int(time.time()) - spent_by > 1, timeout=3, interval=0.01)
    late = client.post("/public/refresh", headers=headers)
    assert late.status_code == 401
    assert works(client, again.get_json()) == (False, False)
    assert works(client, first.get_json()) == (False, False)


def test_without_a_grace_window_the_first_reuse_ends_the_session(client):
    tokens = login(client)
    headers = BEARER(tokens["refreshToken"])
    first = client.post("/public/refresh", headers=headers)
    assert first.status_code == 200
    assert client.post("/public/refresh", headers=headers).status_code == 401
    assert works(client, first.get_json()) == (False, False)


def test_the_grace_window_never_revives_an_ended_session(make_app):
    client = make_app(REFRESH_REUSE_GRACE_SECONDS="60").test_client()
    tokens = login(client)
    first = client.post("/public/refresh", headers=BEARER(tokens["refreshToken"])).get_json()
    assert client.post("/user/logout", headers=BEARER(first["accessToken"])).status_code == 200
    assert client.post("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code == 401


def test_session_records_expire_with_the_last_token(make_app, redis_client):
    client = make_app(ACCESS_TOKEN_TTL="60", REFRESH_TOKEN_TTL="120").test_client()
    tokens = login(client)
    sid = sid_of(tokens["accessToken"])
    meta_ttl = redis_client.ttl(f"jwt:{{kesa}}:session-meta:{sid}")
    assert 0 < meta_ttl <= 120
    for key in redis_client.keys("jwt:*"):
        if not key.endswith(":user"):
            assert 0 < redis_client.ttl(key) <= 120, key
    client.post("/user/logout", headers=BEARER(tokens["accessToken"]))
    assert redis_client.exists(f"jwt:{{kesa}}:session-meta:{sid}") == 0
