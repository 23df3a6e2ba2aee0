"""The real thing: gunicorn with gunicorn.conf.py, on loopback, against the private Redis."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.processes import free_port
from devtools.processes import start_process
from devtools.processes import stop_process
from devtools.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "main:app"]


@dataclass
class Served:
    process: subprocess.Popen
    base: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def request(
        self,
        path: str,
        data: dict | None = None,
        headers: dict | None = None,
        method: str | None = None,
    ):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.base + path, data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def flushed_log(self) -> str:
        """The log with the lines of every request answered so far: once the server has
        exited, all of it; while it runs, once the access line of a marked request is in it
        (a worker writes a request's line right after answering it, so the lines of the
        requests answered before the marker's are there by then)."""
        if self.process.poll() is None:
            marker = f"flush-{time.monotonic_ns()}"
            assert self.request("/healthz", headers={"X-Request-ID": marker})[0] == 200
            assert wait_until(lambda: marker in self.log.read_text(errors="replace"), 10)
        return self.log.read_text(errors="replace")

    def login(self) -> dict:
        status, body = self.request("/public/login", {"username": "kesa", "password": "123"})
        assert status == 200, body
        return json.loads(body)

    def worker_pids(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return {int(pid) for pid in out.split()}


def server_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {**keep, **extra}


def start(command: list[str], env: dict[str, str], log: Path) -> Served:
    port = int(env["PORT"])
    with log.open("wb") as sink:
        process = start_process(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    served = Served(process, f"http://127.0.0.1:{port}", log)
    # gunicorn forks its workers one after another: wait for all of them, so a test that
    # compares worker pids before and after a request does not see a late fork as a respawn
    workers = int(env.get("WEB_CONCURRENCY", "1"))

    def serving() -> bool:
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()}")
        try:
            return served.request("/healthz")[0] == 200 and len(served.worker_pids()) >= workers
        except OSError:
            return False

    if not wait_until(serving, 30):
        stop(served)
        pytest.fail(f"server did not answer within 30 s:\n{log.read_text()}")
    return served


def stop(served: Served) -> None:
    """SIGTERM to the server's process group, SIGKILL to it after 30 s."""
    stop_process(served.process, 30, group=True)


def serve_two_workers(redis_server, tmp_path: Path, **extra: str) -> Iterator[Served]:
    """gunicorn with gunicorn.conf.py and 2 workers on the private Redis, stopped afterwards."""
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        **extra,
    )
    server = start(GUNICORN, env, tmp_path / "gunicorn.log")
    yield server
    stop(server)


@pytest.fixture
def served(redis_server, real_redis, tmp_path) -> Iterator[Served]:
    yield from serve_two_workers(redis_server, tmp_path)


def test_tutorial_session_over_http(served):
    assert served.request("/public/ping") == (200, b"pong")
    tokens = served.login()
    bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
    assert served.request("/user/welcome", headers=bearer) == (200, b"Welcome ! kesa")
    status, body = served.request(
        "/public/refresh", headers={"Authorization": f"Bearer {tokens['refreshToken']}"}
    )
    assert status == 200
    fresh = {"Authorization": f"Bearer {json.loads(body)['accessToken']}"}
    assert served.request("/user/logout", headers=fresh) == (200, b"Logout success")
    assert served.request("/user/welcome", headers=fresh)[0] == 401


def test_revocation_is_seen_by_every_worker_at_once(served):
    tokens = served.login()
    bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
    assert all(served.request("/user/welcome", headers=bearer)[0] == 200 for _ in range(10))
    assert served.request("/user/logout", headers=bearer)[0] == 200
    # fresh connections spread over both workers; none may still accept the token
    assert [served.request("/user/welcome", headers=bearer)[0] for _ in range(20)] == [401] * 20


@pytest.fixture
def served_sync(redis_server, real_redis, tmp_path) -> Iterator[Served]:
    """The sync worker (GUNICORN_WORKER_CLASS=sync), which closes every connection."""
    yield from serve_two_workers(redis_server, tmp_path, GUNICORN_WORKER_CLASS="sync")


def keep_alive_session(served: Served) -> list[str | None]:
    """A whole session, errors and form posts included, from one keep-alive HTTP/1.1 client;
    returns the Connection header of every answer."""
    connection = http.client.HTTPConnection(served.base.removeprefix("http://"), timeout=10)
    connection_headers: list[str | None] = []

    def exchange(method: str, path: str, body: str | None = None, **headers: str):
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        connection_headers.append(response.getheader("Connection"))
        return response.status, payload

    try:
        assert exchange("GET", "/public/ping") == (200, b"pong")
        first_socket = connection.sock
        status, body = exchange("POST", "/public/login", "username=kesa&password=123")
        assert status == 200
        bearer = f"Bearer {json.loads(body)['accessToken']}"
        assert exchange("GET", "/user/welcome", Authorization=bearer) == (200, b"Welcome ! kesa")
        assert exchange("GET", "/user/welcome", Authorization="Bearer nope")[0] == 401
        assert exchange("GET", "/public/feed", Authorization=bearer)[0] == 200
        if all(header != "close" for header in connection_headers):
            assert connection.sock is first_socket  # never reconnected
    finally:
        connection.close()
    return connection_headers


def test_keep_alive_serves_a_whole_session_on_one_connection(served):
    """gthread (the default) keeps HTTP/1.1 connections open, errors and form posts included."""
    assert all(header != "close" for header in keep_alive_session(served))


def test_the_sync_worker_serves_keep_alive_clients_one_connection_each(served_sync):
    """sync answers every request, then closes: a keep-alive client just reconnects."""
    assert keep_alive_session(served_sync) == ["close"] * 5


def test_tokens_never_reach_the_log(served):
    tokens = served.login()
    served.request(f"/user/welcome?token={tokens['accessToken']}")
    served.request(f"/public/feed?token={tokens['accessToken']}&x=1")
    served.request("/user/welcome?token=not-a-real-token")
    served.request(f"/public/refresh?token={tokens['refreshToken']}")
    lines = (  # LOG_FORMAT=text in development
        "method=GET path=/user/welcome status=200",
        "method=GET path=/public/feed status=200",
        "method=GET path=/user/welcome status=401",
        "method=GET path=/public/refresh status=200",
    )
    assert wait_until(lambda: all(line in served.log.read_text() for line in lines), 10)
    log = served.log.read_text()
    for secret in (tokens["accessToken"], tokens["refreshToken"], "not-a-real-token", "token="):
        assert secret not in log
    for part in tokens["accessToken"].split("."):
        assert part not in log


def test_sighup_reloads_without_a_failed_request(served):
    tokens = served.login()
    bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
    before = served.worker_pids()
    results: list[int | str] = []
    stop_at = time.monotonic() + 6

    def hammer() -> None:
        while time.monotonic() < stop_at and len(results) < 3000:
            try:
                results.append(served.request("/user/welcome", headers=bearer)[0])
            except OSError as error:
                results.append(type(error).__name__)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: len(results) >= 100, 10)  # the reload comes amid the load
    os.kill(served.process.pid, signal.SIGHUP)
    for thread in threads:
        thread.join(timeout=20)
    failures = [r for r in results if r != 200]
    assert len(results) > 50
    assert failures == []
    wait_until(lambda: not served.worker_pids() & before, 10)
    after = served.worker_pids()
    assert after and not after & before  # every worker was replaced


@pytest.mark.parametrize(
    "command", [GUNICORN, [sys.executable, "main.py"]], ids=["gunicorn", "main.py"]
)
def test_bad_configuration_stops_start_up_with_one_line(command):
    env = server_env(APP_ENV="production", PORT=str(free_port()), JWT_SECRET="too-short")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: JWT_SECRET must be at least 32 bytes in production"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_python_main_py_serves_with_embedded_gunicorn_and_stops_on_sigterm(redis_server, tmp_path):
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="1",
    )
    server = start([sys.executable, "main.py"], env, tmp_path / "main.log")
    try:
        assert server.request("/public/ping") == (200, b"pong")
        assert server.login()["tokenType"] == "Bearer"
    finally:
        stop(server)
    assert server.process.returncode == 0
    assert "Traceback" not in server.log.read_text()


def raw_exchange(served: Served, payload: bytes) -> bytes:
    """Send bytes as they are (no client-side checks) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "payload,status",
    [
        (b"GET /user/welcome HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 100_000, 431),
        (b"GET /user/welcome?token=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x", 414),
        (b"GET /user/welcome?token=eyJraw.secret.part HTTP/1.1 junk\r\nHost: x", 400),
    ],
    ids=["100KB header", "10KB query token", "bad request line"],
)
def test_gunicorn_level_rejections_are_json_and_leave_no_token_in_the_log(served, payload, status):
    answer = raw_exchange(served, payload + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode()
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["code"] == status
    log = served.flushed_log()
    assert "secret.part" not in log and "eyJraw" not in log
    assert "aaaaaaaaaa" not in log
