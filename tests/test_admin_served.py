"""Admin changes as deployed: real gunicorns with several workers each, whose allowlist caches
must forget an ended session on the very next request; and a Sentinel group whose replica stalls,
where every admin change must answer 503 until the replica confirms it (SPEC "Durable
changes")."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import closing

import pytest

from devtools.processes import free_port
from initialize.errors import NOT_REPLICATED_MESSAGE
from tests.conftest import DEV_ENV
from tests.conftest import app_with_own_redis
from tests.conftest import service_client
from tests.test_admin import ADMIN
from tests.test_admin import ADMIN_CLIENTS
from tests.test_admin import ALICE
from tests.test_server import GUNICORN
from tests.test_server import ROOT
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop
from utils.redis_connection import MARK_SECONDS

WARM_REQUESTS = 20
WAIT_TIMEOUT_MS = 500


def welcome_statuses(instances: list[Served], bearer: dict, count: int) -> list[int]:
    """``count`` requests to each instance (fresh connections, so spread over its workers)."""
    return [s.request("/user/welcome", headers=bearer)[0] for s in instances for _ in range(count)]


def sign_in(served: Served) -> dict[str, str]:
    status, body = served.request("/public/login", ALICE)
    assert status == 200, body
    return {"Authorization": f"Bearer {json.loads(body)['accessToken']}"}


def test_ending_sessions_and_disabling_reach_every_worker_of_every_instance_at_once(
    redis_server, real_redis, tmp_path
):
    """Two instances of two workers each, answers kept up to a minute by the allowlist cache:
    after an admin change through either instance, or through the command line, not one
    worker accepts the ended sessions' tokens on the very next request."""
    instances = []
    common = {
        "APP_ENV": "development",
        "REDIS_URL": redis_server.url,
        "WEB_CONCURRENCY": "2",
        "ADMIN_CLIENTS": ADMIN_CLIENTS,
        "ALLOWLIST_CACHE_SECONDS": "60",
    }
    try:
        for name in ("a", "b"):
            env = server_env(**common, PORT=str(free_port()))
            instances.append(start(GUNICORN, env, tmp_path / f"gunicorn-{name}.log"))
        a, b = instances
        status, _ = a.request("/admin/users", ALICE, headers=ADMIN)
        assert status == 201

        def ended_by(change) -> None:
            bearers = [sign_in(a), sign_in(b)]
            for bearer in bearers:  # every worker remembers the answer
                assert welcome_statuses(instances, bearer, WARM_REQUESTS) == [200] * 40
            change()
            for bearer in bearers:
                assert welcome_statuses(instances, bearer, WARM_REQUESTS) == [401] * 40

        ended_by(lambda: a.request("/admin/users/alice/sessions", headers=ADMIN, method="DELETE"))
        ended_by(lambda: b.request("/admin/users/alice/disable", headers=ADMIN, method="POST"))
        assert a.request("/public/login", ALICE)[0] == 403
        assert b.request("/admin/users/alice/enable", headers=ADMIN, method="POST")[0] == 200

        def from_the_command_line() -> None:
            result = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "main", "users", "end-sessions", "alice"],
                cwd=ROOT,
                env=server_env(**common, PYTHONPATH=str(ROOT)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Ended 2 session(s) of 'alice'." in result.stdout

        ended_by(from_the_command_line)
    finally:
        for instance in instances:
            stop(instance)


def test_every_admin_change_waits_for_the_replica(sentinel_group):
    """With the replica stalled every change is made on the primary but answered 503; resumed,
    the same requests succeed."""
    group = sentinel_group
    environ = {
        **DEV_ENV,
        **group.environ,
        "ADMIN_CLIENTS": ADMIN_CLIENTS,
        "REDIS_SOCKET_TIMEOUT": "1",
        "REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS),
    }
    client = app_with_own_redis(environ).test_client()
    assert client.post("/admin/users", headers=ADMIN, json=ALICE).status_code == 201
    assert client.post("/public/login", data=ALICE).status_code == 200
    client.post("/public/login", data={**ALICE, "password": "wrong-password"})  # a count
    bob = {"username": "bob", "password": "bob-password"}
    changes = [
        ("POST", "/admin/users", bob),
        ("DELETE", "/admin/users/alice/sessions", None),
        ("POST", "/admin/users/alice/disable", None),
        ("POST", "/admin/users/alice/enable", None),
        ("POST", "/admin/users/alice/unlock", None),
        ("POST", "/admin/users/alice/password", {"newPassword": "alice-password-2"}),
        ("DELETE", "/admin/users/alice", None),
    ]
    with group.paused(group.replica):
        for method, path, body in changes:
            begun = time.monotonic()
            response = client.open(path, method=method, headers=ADMIN, json=body)
            assert response.status_code == 503, (path, response.get_json())
            assert response.get_json()["message"] == NOT_REPLICATED_MESSAGE
            assert time.monotonic() - begun >= WAIT_TIMEOUT_MS / 1000 * 0.9
            if path == "/admin/users/alice/disable":  # made on the primary all the same
                assert client.post("/public/login", data=ALICE).status_code == 403
        # reads do not wait
        assert client.get("/admin/users", headers=ADMIN).status_code == 200
    # resumed: a repeat is confirmed; the changes were made (the delete's sweep included)
    assert client.post("/admin/users", headers=ADMIN, json=bob).status_code == 409
    assert client.delete("/admin/users/alice", headers=ADMIN).status_code == 404
    with closing(service_client("redis://127.0.0.1/0", **group.environ)) as primary:
        # nothing but the durable-change mechanism's short-lived mark (utils/redis_connection.py)
        assert primary.keys("jwt:{alice}*") == ["jwt:{alice}:replicated"]
        assert 0 < primary.ttl("jwt:{alice}:replicated") <= MARK_SECONDS
    assert client.post("/public/login", data=ALICE).status_code == 401


@pytest.fixture(autouse=True)
def _no_leftover_users(request):
    """The Sentinel group is the session's: leave it as found."""
    yield
    if "sentinel_group" in request.fixturenames:
        group = request.getfixturevalue("sentinel_group")
        with closing(service_client("redis://127.0.0.1/0", **group.environ)) as primary:
            primary.flushall()
