"""`./run.sh --local` for real: gunicorn, a private redis-server or the embedded stand-in,
a login over HTTP, and a clean stop; plus the persistence of a session across a restart of a
redis-server configured exactly as run.sh configures it (redis-local.conf).

Only 127.0.0.1 is used, every wait is bounded, and every process started here is stopped by
its pid (or by the process group of the run.sh started here) in a finally block. The machine's
own Redis on 6379, if any, is never used: LOCAL_REDIS forces the choice.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from initialize import create_app
from tests.conftest import DEV_ENV
from tests.conftest import SERVICE_VARIABLES
from tests.conftest import AuthActions
from tests.conftest import free_port
from tests.conftest import redis_server_binary

REPO = Path(__file__).resolve().parent.parent
RUN_SH = REPO / "run.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
START_TIMEOUT = 90.0  # includes a possible `pip install -r requirements.txt` into .venv
STOP_TIMEOUT = 45.0


BEARER = AuthActions.bearer
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, *, data: dict | None = None, token: str | None = None):
    """(status, body text) of one request to 127.0.0.1."""
    assert url.startswith("http://127.0.0.1:")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purpose (it only waits for its parent to reap it).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def session_members(sid: int) -> list[int]:
    """Live pids in session `sid` (Linux /proc), the run.sh started here being its leader."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class LocalRun:
    """One `./run.sh --local` in its own session, its output in a file."""

    def __init__(self, tmp_path: Path, local_redis: str) -> None:
        self.port = free_port()
        self.data = tmp_path / "data"
        self.log_path = tmp_path / "run-local.log"
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        env.update(
            LOCAL_REDIS=local_redis,
            PORT=str(self.port),
            DATA_DIR=str(self.data),
            WEB_CONCURRENCY="1",
            GUNICORN_THREADS="2",
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["bash", str(RUN_SH), "--local"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"run.sh exited early ({self.proc.returncode}):\n{self.output()}"
                )
            try:
                return http("GET", f"{self.base}/public/ping") == (200, "pong")
            except OSError:
                return False

        assert wait_until(ready, START_TIMEOUT, 0.3), f"not serving in time:\n{self.output()}"

    def pid_from_log(self, pattern: str) -> int:
        match = re.search(pattern, self.output())
        assert match, f"{pattern!r} not in the output:\n{self.output()}"
        return int(match.group(1))

    def signal(self, signum: int) -> int:
        """Send `signum` like a terminal would (to run.sh's process group); its exit status."""
        os.killpg(self.proc.pid, signum)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Last-resort cleanup: only this run.sh's session, by its pids."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=STOP_TIMEOUT)
            for pid in session_members(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        finally:
            self._log.close()


def login_and_welcome(base: str) -> dict:
    status, body = http(
        "POST", f"{base}/public/login", data={"username": "kesa", "password": "123"}
    )
    assert status == 200, body
    tokens = json.loads(body)
    assert tokens["accessToken"] and tokens["refreshToken"]
    assert http("GET", f"{base}/user/welcome", token=tokens["accessToken"]) == (
        200,
        "Welcome ! kesa",
    )
    return tokens


def need_venv() -> None:
    if not VENV_PYTHON.exists():
        pytest.skip(
            ".venv is missing: python3 -m venv .venv"
            " && .venv/bin/pip install -r requirements-dev.txt"
        )


# ------------------------------------------------------------------------------ run.sh --local


def test_local_mode_with_a_private_redis_server(tmp_path):
    redis_server_binary()
    need_venv()
    run = LocalRun(tmp_path, "private")
    try:
        run.wait_ready()
        login_and_welcome(run.base)
        out = run.output()
        assert "APP_ENV=development" in out and "kesa / 123" in out  # the banner
        redis_pid = run.pid_from_log(r"private redis-server \(pid (\d+)\)")
        gunicorn_pid = run.pid_from_log(r"gunicorn \(pid (\d+)\) started")
        redis_dir = run.data / f"redis-{run.port}"
        assert (redis_dir / "redis.pid").read_text().strip() == str(redis_pid)
        assert pid_alive(redis_pid) and pid_alive(gunicorn_pid)

        assert run.signal(signal.SIGTERM) == 0, run.output()
        assert wait_until(lambda: not pid_alive(gunicorn_pid), 5), "gunicorn still runs"
        assert wait_until(lambda: not pid_alive(redis_pid), 5), "redis-server still runs"
        assert session_members(run.proc.pid) == []
        assert (redis_dir / "appendonlydir").is_dir(), "AOF is on"
        assert not (redis_dir / "redis.pid").exists(), "redis-server shut down cleanly"
    finally:
        run.stop()


def test_local_mode_with_the_embedded_stand_in(tmp_path):
    need_venv()
    try:
        subprocess.run(
            [str(VENV_PYTHON), "-c", "import fakeredis"], check=True, capture_output=True
        )
    except subprocess.CalledProcessError:
        pytest.skip("fakeredis is not in .venv (requirements-dev.txt)")
    run = LocalRun(tmp_path, "embedded")
    try:
        run.wait_ready()
        login_and_welcome(run.base)
        out = run.output()
        assert "NOTHING PERSISTS" in out
        standin_pid = run.pid_from_log(
            r"standin_redis: listening on 127\.0\.0\.1:\d+ \(pid (\d+)\)"
        )
        gunicorn_pid = run.pid_from_log(r"gunicorn \(pid (\d+)\) started")

        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        assert run.signal(signal.SIGINT) == 0, run.output()
        assert wait_until(lambda: not pid_alive(gunicorn_pid), 5), "gunicorn still runs"
        assert wait_until(lambda: not pid_alive(standin_pid), 5), "the stand-in still runs"
        assert session_members(run.proc.pid) == []
        assert not (run.data / f"redis-{run.port}").exists()  # nothing written for it
    finally:
        run.stop()


# -------------------------------------------------------------------------------- persistence


class PrivateRedis:
    """redis-server started exactly as run.sh starts it (redis-local.conf + per-instance args)."""

    def __init__(self, exe: str, directory: Path) -> None:
        self.exe = exe
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [self.exe, str(REPO / "redis-local.conf")]  # then run.sh's per-instance args:
        argv += ["--port", str(self.port), "--dir", str(self.dir)]
        argv += ["--pidfile", str(self.dir / "redis.pid"), "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"*1\r\n$4\r\nPING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        assert wait_until(answers, 15, 0.1), "redis-server did not answer"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server flushes the AOF, then exits
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def test_a_session_survives_a_restart_of_the_private_redis(tmp_path):
    exe = redis_server_binary()
    server = PrivateRedis(exe, tmp_path / "redis-data")
    try:
        server.start()
        url = f"redis://127.0.0.1:{server.port}/0"
        client = create_app({**DEV_ENV, "REDIS_URL": url}).test_client()
        response = client.post("/public/login", data={"username": "kesa", "password": "123"})
        assert response.status_code == 200, response.get_data(as_text=True)
        tokens = response.get_json()
        welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
        assert welcome.get_data(as_text=True) == "Welcome ! kesa"

        server.stop()
        assert (tmp_path / "redis-data" / "appendonlydir").is_dir()
        server.start()  # same port, same directory: it reloads the AOF

        # a fresh app: nothing kept in memory
        client = create_app({**DEV_ENV, "REDIS_URL": url}).test_client()
        welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
        assert welcome.status_code == 200, welcome.get_data(as_text=True)
        assert welcome.get_data(as_text=True) == "Welcome ! kesa"
        refreshed = client.get("/public/refresh", headers=BEARER(tokens["refreshToken"]))
        assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
        new_tokens = refreshed.get_json()
        assert new_tokens["accessToken"] != tokens["accessToken"]
        welcome = client.get("/user/welcome", headers=BEARER(new_tokens["accessToken"]))
        assert welcome.get_data(as_text=True) == "Welcome ! kesa"
    finally:
        server.stop()
