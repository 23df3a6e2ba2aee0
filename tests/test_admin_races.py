"""Races between an operator's change and the user's own requests, on a real redis-server and a
real Redis Cluster: whatever order Redis runs them in, a disabled account ends with no live
session, a deleted one with nothing left, and a replaced password with no session of the old.

The contenders start on a barrier (tests/test_session_races.py's ``race``), each round anew.
"""

from __future__ import annotations

import pytest
from flask import Flask

from initialize import create_app
from tests.conftest import DEV_ENV
from tests.test_admin import ADMIN
from tests.test_admin import ADMIN_CLIENTS
from tests.test_admin import ALICE
from tests.test_admin import user_keys
from tests.test_session_races import assert_dead
from tests.test_session_races import issued
from tests.test_session_races import race
from tests.test_session_races import refresh

ROUNDS = 8


@pytest.fixture(params=["real_redis", "cluster_redis"])
def topology(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


@pytest.fixture
def app(topology) -> Flask:
    return create_app({**DEV_ENV, "ADMIN_CLIENTS": ADMIN_CLIENTS}, redis_client=topology)


def sign_in(app: Flask, credentials: dict = ALICE):
    return app.test_client().post("/public/login", data=credentials)


def admin(app: Flask, method: str, path: str, **kwargs):
    return app.test_client().open(path, method=method, headers=ADMIN, **kwargs)


def test_disable_racing_a_refresh_and_a_login(app, topology):
    """The account ends disabled with no live session: the refresh either ran first (its pair
    ended with the session) or found the session gone; the login either recorded first (ended
    too) or was refused (403 once disabled; 401 when it read the account before the change)."""
    assert admin(app, "POST", "/admin/users", json=ALICE).status_code == 201
    outcomes = set()
    for _ in range(ROUNDS):
        assert admin(app, "POST", "/admin/users/alice/enable").status_code == 200
        tokens = sign_in(app).get_json()
        disabled, refreshed, logged_in = race(
            lambda: admin(app, "POST", "/admin/users/alice/disable"),
            lambda tokens=tokens: refresh(app, tokens),
            lambda: sign_in(app),
        )
        assert disabled.status_code == 200, disabled.get_json()
        assert refreshed.status_code in (200, 401)
        assert logged_in.status_code in (200, 401, 403)
        outcomes.add((refreshed.status_code, logged_in.status_code))
        shown = admin(app, "GET", "/admin/users/alice").get_json()
        assert shown["disabled"] is True and shown["sessions"] == []
        assert topology.zcard("jwt:{alice}:sessions") == 0
        assert_dead(app, tokens, *issued(refreshed), *issued(logged_in))
        assert sign_in(app).status_code == 403
    assert outcomes  # which interleavings came up, for the failure message if any


def test_delete_racing_a_login(app, topology):
    """After the race the account is gone with every token: a login that recorded first was
    ended by the delete, one that came later found no account. All that may remain are the
    attempt counts (per address, per account) that an attempt at the name, now unknown, writes
    after the delete's sweep, with their TTL."""
    for _ in range(ROUNDS):
        assert admin(app, "POST", "/admin/users", json=ALICE).status_code == 201
        tokens = sign_in(app).get_json()
        deleted, logged_in = race(
            lambda: admin(app, "DELETE", "/admin/users/alice"),
            lambda: sign_in(app),
        )
        assert deleted.status_code == 200, deleted.get_json()
        assert logged_in.status_code in (200, 401)
        assert_dead(app, tokens, *issued(logged_in))
        left = user_keys(topology, "alice")
        counters = ("jwt:{alice}:login-failures:", "jwt:{alice}:account-failures")
        assert all(key.startswith(counters) for key in left), left
        assert all(topology.ttl(key) > 0 for key in left)
        assert admin(app, "GET", "/admin/users/alice").status_code == 404
        for key in left:  # the next round starts from nothing
            topology.delete(key)


def test_a_password_set_racing_a_login_with_the_old_password(app):
    """No session started with the old password outlives the new one."""
    assert admin(app, "POST", "/admin/users", json=ALICE).status_code == 201
    old = ALICE
    for round_number in range(ROUNDS):
        new = {**ALICE, "password": f"alice-password-{round_number}"}
        tokens = sign_in(app, old).get_json()
        changed, logged_in = race(
            lambda new=new: admin(
                app, "POST", "/admin/users/alice/password", json={"newPassword": new["password"]}
            ),
            lambda old=old: sign_in(app, old),
        )
        assert changed.status_code == 200
        assert logged_in.status_code in (200, 401)
        assert_dead(app, tokens, *issued(logged_in))
        assert sign_in(app, old).status_code == 401
        assert sign_in(app, new).status_code == 200
        old = new
