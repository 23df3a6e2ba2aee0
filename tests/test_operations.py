"""Operations end to end: gunicorn with gunicorn.conf.py, its workers, its logs and metrics."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import free_port
from devtools.processes import wait_until
from tests.test_observability import AUDIT_EVENTS
from tests.test_server import GUNICORN
from tests.test_server import ROOT
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop

PING = ("http_requests_total", (("method", "GET"), ("route", "/public/ping"), ("status", "200")))
WORKERS = ("gunicorn_workers", ())


def metrics(served: Served) -> dict[tuple[str, tuple], float]:
    status, body = served.request("/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def metrics_dir(served: Served) -> Path:
    """The multiprocess directory of the running server: where its workers' files are mapped."""
    mapped = {
        Path(line.split(maxsplit=5)[5]).parent
        for pid in served.worker_pids()
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if line.rstrip().endswith(".db")
    }
    (directory,) = mapped
    return directory


def wait_for(condition, what: str, seconds: float = 20.0) -> None:
    if not wait_until(condition, seconds):
        pytest.fail(f"timed out waiting for {what}")


def ping(served: Served, count: int) -> None:
    assert [served.request("/public/ping")[0] for _ in range(count)] == [200] * count


@pytest.fixture(params=["gunicorn", "main.py"])
def two_workers(request, redis_server, real_redis, tmp_path) -> Iterator[Served]:
    """A 2-worker server, started by `gunicorn -c gunicorn.conf.py` or by `python main.py`."""
    command = GUNICORN if request.param == "gunicorn" else [sys.executable, "main.py"]
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        # a stale directory a previous run or another service left: must not be used
        PROMETHEUS_MULTIPROC_DIR=str(stale_metrics_dir(tmp_path)),
    )
    server = start(command, env, tmp_path / "server.log")
    yield server
    stop(server)


def stale_metrics_dir(tmp_path: Path) -> Path:
    """A directory holding another process's counter file with a large ping count."""
    stale = tmp_path / "stale-metrics"
    stale.mkdir()
    env = {**server_env(), "PROMETHEUS_MULTIPROC_DIR": str(stale)}
    code = (
        "from prometheus_client import Counter\n"
        "Counter('http_requests_total', 'x', ['method', 'route', 'status'])"
        ".labels('GET', '/public/ping', '200').inc(1000)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    assert list(stale.iterdir())
    return stale


def test_counters_sum_workers_and_survive_reload_and_a_crash(two_workers):
    served, n = two_workers, 40
    before = metrics(served)
    assert before.get(PING, 0) == 0  # the stale directory was not used
    ping(served, n)
    assert metrics(served)[PING] == n
    wait_for(lambda: metrics(served)[WORKERS] == 2, "both workers to have built their app")
    workers = served.worker_pids()
    assert {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir(served).glob("counter_*.db")} <= (
        workers
    )

    os.kill(served.process.pid, signal.SIGHUP)  # graceful reload: every worker replaced
    wait_for(lambda: not served.worker_pids() & workers and len(served.worker_pids()) == 2, "HUP")
    assert metrics(served)[PING] == n
    ping(served, n)
    assert metrics(served)[PING] == 2 * n

    victim = min(served.worker_pids())
    os.kill(victim, signal.SIGKILL)  # a crash: gunicorn replaces the worker
    wait_for(
        lambda: victim not in served.worker_pids() and len(served.worker_pids()) == 2, "respawn"
    )
    directory = metrics_dir(served)
    wait_for(  # the new worker has built its app
        lambda: all(
            (directory / f"gauge_livesum_{pid}.db").exists() for pid in served.worker_pids()
        ),
        "the new worker's gauge",
    )
    final = metrics(served)
    assert final[PING] == 2 * n  # the dead worker's counts stay
    assert final[WORKERS] == 2  # child_exit dropped its live gauge
    assert not list(metrics_dir(served).glob(f"gauge_livesum_{victim}.db"))


def test_the_metrics_directory_is_private_fresh_and_removed_at_exit(two_workers):
    directory = metrics_dir(two_workers)
    assert directory.name.startswith("flask-jwt-redis-metrics-")
    mode = directory.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o700 and mode.st_uid == os.getuid()
    assert {f.name.rsplit("_", 1)[0] for f in directory.iterdir()} <= {
        "counter",
        "histogram",
        "gauge_livesum",
    }
    stop(two_workers)
    assert not directory.exists()


INTROSPECTION_CLIENT = "walk-resource-server:walk-introspection-secret"
ADMIN_CLIENT = "fuzz-admin:fuzz-admin-secret-0123"
ENDPOINT_WALK_REQUESTS = 34  # what every_endpoint sends to paths other than /healthz


def every_endpoint(served: Served, request_id: str) -> list[str]:
    """Walk every route, errors included; return the secrets that must never be logged."""
    password = "correct-horse-battery-staple"
    assert served.request("/public/register", {"username": "walker", "password": password})[0]
    served.request("/public/register", {"username": "walker", "password": password})  # 409
    served.request("/public/register", {"username": "x", "password": "short"})  # 400
    served.request("/public/login", {"username": "walker", "password": "wrong-" + password})
    status, body = served.request(
        "/public/login", {"username": "walker", "password": password}, {"X-Request-ID": request_id}
    )
    assert status == 200
    tokens = json.loads(body)
    access, refresh = tokens["accessToken"], tokens["refreshToken"]
    bearer = {"Authorization": f"Bearer {access}"}
    served.request("/public/ping?token=" + access)
    served.request("/user/welcome", headers=bearer)
    served.request("/user/welcome?token=" + access)
    served.request("/user/welcome", headers={"Authorization": "Bearer " + access[:-4] + "AAAA"})
    served.request("/public/feed", headers=bearer)
    served.request("/public/feed")
    status, body = served.request("/public/refresh", headers={"Authorization": f"Bearer {refresh}"})
    second = json.loads(body)
    served.request(f"/public/refresh?token={refresh}")  # reuse: the session ends
    fresh = json.loads(
        served.request("/public/login", {"username": "walker", "password": password})[1]
    )
    boundary = "xyz"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\n'
        f"{fresh['accessToken']}\r\n--{boundary}\r\nContent-Disposition: form-data; "
        f'name="title"\r\n\r\nclip\r\n--{boundary}--\r\n'
    ).encode()
    request = urllib.request.Request(
        served.base + "/user/publish",
        data=multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    fresh_bearer = {"Authorization": f"Bearer {fresh['accessToken']}"}
    served.request("/user/logout", headers=fresh_bearer)
    served.request("/user/logout", headers=fresh_bearer)  # 401: revoked
    again = json.loads(
        served.request("/public/login", {"username": "walker", "password": password})[1]
    )
    served.request("/user/logout-all", {}, {"Authorization": f"Bearer {again['accessToken']}"})
    # Sessions, a password change and the OAuth endpoints (issue 12).
    walker = {"username": "walker", "password": password}
    third = json.loads(served.request("/public/login", walker)[1])
    third_bearer = {"Authorization": f"Bearer {third['accessToken']}"}
    served.request("/user/sessions", headers=third_bearer)
    fourth = json.loads(served.request("/public/login", walker)[1])
    fourth_payload = base64.urlsafe_b64decode(fourth["accessToken"].split(".")[1] + "==")
    ended = f"/user/sessions/{json.loads(fourth_payload)['sid']}"
    assert served.request(ended, headers=third_bearer, method="DELETE")[0] == 200
    new_password = "a-second-horse-battery"
    change = {"password": password, "newPassword": new_password}
    assert served.request("/user/password", change, third_bearer)[0] == 200
    grant = {"grant_type": "password", "username": "walker", "password": new_password}
    oauth = json.loads(served.request("/oauth/token", grant)[1])
    rotated = json.loads(
        served.request(
            "/oauth/token", {"grant_type": "refresh_token", "refresh_token": oauth["refresh_token"]}
        )[1]
    )
    client = {"Authorization": "Basic " + base64.b64encode(INTROSPECTION_CLIENT.encode()).decode()}
    assert served.request("/oauth/introspect", {"token": rotated["access_token"]}, client)[0] == 200
    assert served.request("/oauth/revoke", {"token": rotated["refresh_token"]})[0] == 200
    tokens_seen_later = [third, fourth]
    oauth_tokens = [oauth["access_token"], oauth["refresh_token"]]
    oauth_tokens += [rotated["access_token"], rotated["refresh_token"]]
    for path in ("/healthz", "/readyz", "/.well-known/jwks.json", "/openapi.json", "/nowhere"):
        served.request(path)
    served.request("/public/login", {"username": "walker"})  # 400: no password
    assert served.request("/metrics")[0] == 200
    tokens_seen = [access, refresh, second["accessToken"], second["refreshToken"]]
    tokens_seen += [fresh["accessToken"], fresh["refreshToken"], again["accessToken"]]
    tokens_seen += [t[k] for t in tokens_seen_later for k in ("accessToken", "refreshToken")]
    tokens_seen += oauth_tokens
    secrets = [password, new_password, INTROSPECTION_CLIENT.split(":")[1]]
    return [*secrets, *tokens_seen, *(part for t in tokens_seen for part in t.split("."))]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logs_name_every_request_and_never_a_secret(redis_server, real_redis, tmp_path, log_format):
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        LOG_FORMAT=log_format,
        INTROSPECTION_CLIENTS=INTROSPECTION_CLIENT,
    )
    served = start(GUNICORN, env, tmp_path / "server.log")
    try:
        secrets = every_endpoint(served, "walk-1")
    finally:
        stop(served)
    lines = served.log.read_text().splitlines()
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
    else:
        assert all(re.match(r"ts=\S+ level=\w+ event=", line) for line in lines), lines
        records = [dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)) for line in lines]
        for record in records:
            record.update({k: json.loads(v) for k, v in record.items() if v.startswith('"')})
    assert all({"ts", "level", "event"} <= set(record) for record in records)
    access = [r for r in records if r["event"] == "request"]
    assert len([r for r in access if r["path"] != "/healthz"]) == ENDPOINT_WALK_REQUESTS
    by_id = [r for r in access if r["request_id"] == "walk-1"]
    assert len(by_id) == 1 and by_id[0]["path"] == "/public/login"
    assert str(by_id[0]["status"]) == "200" and by_id[0]["client"] == "127.0.0.1"
    assert all("?" not in r["path"] for r in access)
    assert any(r.get("user") == "walker" and r["path"] == "/user/welcome" for r in access)
    # every audit event but login_locked, which the walk never provokes
    audit = {r["event"] for r in records} & (AUDIT_EVENTS - {"login_locked"})
    assert len(audit) == 10
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text
    assert "$argon2" not in text and "token=" not in text


@pytest.mark.parametrize(
    "variable,value,commands",
    [
        ("GUNICORN_THREADS", "0", ("gunicorn", "main.py")),
        ("GUNICORN_WORKER_CLASS", "eventlet", ("gunicorn", "main.py")),
        ("PORT", "70000", ("gunicorn", "main.py")),
        ("BIND", "nowhere", ("gunicorn", "main.py")),
        ("LOG_FORMAT", "xml", ("gunicorn", "main.py")),
        ("METRICS_ALLOW_IPS", "localhost", ("gunicorn", "main.py")),
        # gunicorn's own config module parses WEB_CONCURRENCY as it is imported, before any
        # configuration file: only the service's entry point can check it first.
        ("WEB_CONCURRENCY", "two", ("main.py",)),
    ],
)
def test_a_bad_server_setting_is_one_line(variable, value, commands):
    for name in commands:
        command = GUNICORN if name == "gunicorn" else [sys.executable, "main.py"]
        env = server_env(APP_ENV="development", **{"PORT": str(free_port()), variable: value})
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode != 0, name
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"configuration error: {variable} "), (name, line)


def test_the_running_service_holds_to_its_openapi_document(redis_server, real_redis, tmp_path):
    """schemathesis against the live server, bounded in time: zero failures allowed."""
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        LOGIN_MAX_FAILURES="1000",  # fuzzed logins would lock kesa out of the run's own login
        ADMIN_CLIENTS=ADMIN_CLIENT,  # the /admin routes, called with these credentials
    )
    served = start(GUNICORN, env, tmp_path / "server.log")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    # The admin client's credentials for the routes whose security is adminClient (only those:
    # the token routes keep being called without them)
    admin_id, admin_secret = ADMIN_CLIENT.split(":")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.adminClient]\nusername = "{admin_id}"\npassword = "{admin_secret}"\n'
    )
    try:
        result = subprocess.run(
            [
                str(schemathesis),
                "--config-file",
                str(config),
                "run",
                served.base + "/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,"
                "content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-time",
                "40",
                "--workers",
                "2",
                "--request-timeout",
                "10",
                "--seed",
                "13",
            ],
            cwd=tmp_path,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop(served)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", result.stdout), result.stdout[-3000:]
    log = served.log.read_text()
    assert "Traceback" not in log
    # the admin routes were reached with the credentials, not only refused
    admitted = re.findall(r"method=(\w+) path=(/admin/users\S*) status=20[01]", log)
    assert {method for method, _ in admitted} >= {"GET", "POST"}, log[-3000:]
