"""Races between the ways a session ends and its refreshes, on the real redis-server.

Each race starts its contenders on a barrier, in threads with their own test clients of one
app, and repeats a bounded number of times. After every round, whatever order Redis ran them
in, no token of an ended session may work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import jwt
import pytest
from flask import Flask

from initialize import create_app
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions

BEARER = AuthActions.bearer
ROUNDS = 8


def race(*contenders: Callable[[], object]) -> list[object]:
    """Run the contenders at once; returns their results in order."""
    barrier = threading.Barrier(len(contenders))
    results: list[object] = [None] * len(contenders)

    def run(index: int, contender: Callable[[], object]) -> None:
        barrier.wait(timeout=10)
        results[index] = contender()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def app(real_redis) -> Flask:
    return create_app(DEV_ENV, redis_client=real_redis)


def login(app: Flask) -> dict:
    response = app.test_client().post("/public/login", data={"username": "kesa", "password": "123"})
    assert response.status_code == 200
    return response.get_json()


def refresh(app: Flask, tokens: dict):
    return app.test_client().post("/public/refresh", headers=BEARER(tokens["refreshToken"]))


def assert_dead(app: Flask, *token_sets: dict) -> None:
    """Neither the access nor the refresh token of any of these pairs works any more."""
    client = app.test_client()
    for tokens in token_sets:
        assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 401
        assert (
            client.post("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code
            == 401
        )


def issued(response) -> list[dict]:
    """The pair a refresh answered with, if it succeeded."""
    return [response.get_json()] if response.status_code == 200 else []


def test_logout_racing_a_refresh_of_the_same_session(app):
    for _ in range(ROUNDS):
        tokens = login(app)
        logout, refreshed = race(
            lambda tokens=tokens: app.test_client().post(
                "/user/logout", headers=BEARER(tokens["accessToken"])
            ),
            lambda tokens=tokens: refresh(app, tokens),
        )
        assert logout.status_code in (200, 401)
        assert refreshed.status_code in (200, 401)
        assert_dead(app, tokens, *issued(refreshed))


def test_password_change_racing_a_refresh_of_another_session(app):
    password = "123"
    for round_number in range(ROUNDS):
        mine, other = login_with(app, password), login_with(app, password)
        new_password = f"new-password-{round_number}"
        changed, refreshed = race(
            lambda mine=mine, password=password, new_password=new_password: app.test_client().post(
                "/user/password",
                data={"password": password, "newPassword": new_password},
                headers=BEARER(mine["accessToken"]),
            ),
            lambda other=other: refresh(app, other),
        )
        assert changed.status_code == 200, changed.get_json()
        password = new_password
        assert_dead(app, other, *issued(refreshed))
        welcome = app.test_client().get("/user/welcome", headers=BEARER(mine["accessToken"]))
        assert welcome.status_code == 200


def login_with(app: Flask, password: str) -> dict:
    response = app.test_client().post(
        "/public/login", data={"username": "kesa", "password": password}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_ending_a_session_racing_its_refresh(app):
    for _ in range(ROUNDS):
        mine, other = login(app), login(app)
        sid = jwt.decode(other["accessToken"], options={"verify_signature": False})["sid"]
        ended, refreshed = race(
            lambda mine=mine, sid=sid: app.test_client().delete(
                f"/user/sessions/{sid}", headers=BEARER(mine["accessToken"])
            ),
            lambda other=other: refresh(app, other),
        )
        assert ended.status_code == 200
        assert_dead(app, other, *issued(refreshed))


@pytest.mark.parametrize(("grace", "expected_successes"), [("30", 30), ("0", 1)])
def test_thirty_concurrent_refreshes(real_redis, grace, expected_successes):
    app = create_app({**DEV_ENV, "REFRESH_REUSE_GRACE_SECONDS": grace}, redis_client=real_redis)
    tokens = login(app)
    sid = jwt.decode(tokens["accessToken"], options={"verify_signature": False})["sid"]
    responses = race(*[lambda: refresh(app, tokens) for _ in range(30)])
    successes = [r.get_json() for r in responses if r.status_code == 200]
    assert len(successes) == expected_successes
    assert {r.status_code for r in responses} <= {200, 401}
    sids = {
        jwt.decode(p["accessToken"], options={"verify_signature": False})["sid"] for p in successes
    }
    assert sids == {sid}
    client = app.test_client()
    if grace != "0":
        for pair in successes:  # every tab got a working pair in the one session
            assert (
                client.get("/user/welcome", headers=BEARER(pair["accessToken"])).status_code == 200
            )
        sessions = client.get("/user/sessions", headers=BEARER(successes[0]["accessToken"]))
        assert [s["id"] for s in sessions.get_json()["sessions"]] == [sid]
    else:  # the 29 losers presented a spent token: theft, the session ended
        assert_dead(app, tokens, *successes)


def test_password_changes_racing_logins_and_refreshes_leave_no_old_session(real_redis):
    """Logins with the old password and refreshes of another session keep running while the
    password changes: whatever they got, nothing issued against the old password works after
    the change answered (a login whose check straddles the change is refused, not recorded)."""
    app = create_app({**DEV_ENV, "LOGIN_MAX_FAILURES": "1000"}, redis_client=real_redis)
    password = "123"
    for round_number in range(ROUNDS):
        new_password = f"new-password-{round_number}"
        change_amid_logins_and_refreshes(app, password, new_password)
        password = new_password


def change_amid_logins_and_refreshes(app: Flask, password: str, new_password: str) -> None:
    """One round: the change, two threads logging in with ``password`` and one refreshing
    another session, each until the change has answered (bounded in count)."""
    mine, other = login_with(app, password), login_with(app, password)
    changed = threading.Event()

    def change():
        try:
            return app.test_client().post(
                "/user/password",
                data={"password": password, "newPassword": new_password},
                headers=BEARER(mine["accessToken"]),
            )
        finally:
            changed.set()

    def keep_logging_in() -> list:
        answers = []
        while not changed.is_set() and len(answers) < 40:
            answers.append(
                app.test_client().post(
                    "/public/login", data={"username": "kesa", "password": password}
                )
            )
        return answers

    def keep_refreshing() -> list:
        answers, tokens = [], other
        while not changed.is_set() and len(answers) < 40:
            answers.append(refresh(app, tokens))
            if answers[-1].status_code != 200:
                break
            tokens = answers[-1].get_json()
        return answers

    answer, *others = race(change, keep_logging_in, keep_logging_in, keep_refreshing)
    assert answer.status_code == 200, answer.get_json()
    answers = [response for responses in others for response in responses]
    assert {response.status_code for response in answers} <= {200, 401}
    assert_dead(app, other, *[pair for response in answers for pair in issued(response)])
    welcome = app.test_client().get("/user/welcome", headers=BEARER(mine["accessToken"]))
    assert welcome.status_code == 200
