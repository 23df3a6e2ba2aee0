"""`./run.sh --local` for real: gunicorn, a private redis-server or the embedded stand-in,
a login over HTTP, and a clean stop; plus the persistence of a session across a restart of a
redis-server configured exactly as the local runner (devtools/local.py) configures it.

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
import subprocess
from pathlib import Path

import pytest

from devtools.local import LocalError
from devtools.local import banner
from devtools.local import choose_redis
from devtools.local import read_options
from devtools.local import serve
from devtools.processes import free_port
from devtools.processes import start_redis_server
from devtools.processes import stop_process
from devtools.processes import wait_until
from initialize.config import load_settings
from tests.conftest import DEV_ENV
from tests.conftest import SERVICE_VARIABLES
from tests.conftest import AuthActions
from tests.conftest import app_with_own_redis
from tests.conftest import redis_server_binary
from tests.loopback import http
from utils.keys import generate_private_key_pem

REPO = Path(__file__).resolve().parent.parent
RUN_SH = REPO / "run.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
START_TIMEOUT = 90.0  # includes a possible `pip install -r requirements.txt` into .venv
STOP_TIMEOUT = 45.0


BEARER = AuthActions.bearer


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
            stop_process(self.proc, STOP_TIMEOUT, group=True)
            for pid in session_members(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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


def start_private_redis(directory: Path, port: int | None = None):
    """redis-server started exactly as the local runner starts it (redis-local.conf + its args)."""
    directory.mkdir(parents=True, exist_ok=True)
    return start_redis_server(
        redis_server_binary(),
        directory,
        str(REPO / "redis-local.conf"),
        "--pidfile", str(directory / "redis.pid"),
        "--logfile", str(directory / "redis.log"),
        port=port,
    )  # fmt: skip


def test_a_session_survives_a_restart_of_the_private_redis(tmp_path):
    directory = tmp_path / "redis-data"
    server, port = start_private_redis(directory)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = app_with_own_redis({**DEV_ENV, "REDIS_URL": url}).test_client()
        response = client.post("/public/login", data={"username": "kesa", "password": "123"})
        assert response.status_code == 200, response.get_data(as_text=True)
        tokens = response.get_json()
        welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
        assert welcome.get_data(as_text=True) == "Welcome ! kesa"

        assert stop_process(server, 15) == 0  # SIGTERM: redis-server flushes the AOF
        assert (directory / "appendonlydir").is_dir()
        server, _ = start_private_redis(directory, port)  # same port and directory: AOF reload

        # a fresh app: nothing kept in memory
        client = app_with_own_redis({**DEV_ENV, "REDIS_URL": url}).test_client()
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
        stop_process(server, 15)


# ------------------------------------------------------- the runner, imported (devtools/local.py)


def test_options_default_to_development_and_refuse_bad_values(tmp_path):
    options = read_options({"DATA_DIR": str(tmp_path)})
    assert options.environ["APP_ENV"] == "development"
    assert (options.local_redis, options.port) == ("auto", 9090)
    assert options.state_file == tmp_path / "local-9090.json"
    assert read_options({"APP_ENV": "production"}).environ["APP_ENV"] == "production"
    for environ, variable in (
        ({"LOCAL_REDIS": "sometimes"}, "LOCAL_REDIS"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"STOP_TIMEOUT": "soon"}, "STOP_TIMEOUT"),
    ):
        with pytest.raises(LocalError) as caught:
            read_options(environ)
        assert caught.value.status == 2 and str(caught.value).startswith(variable)


def test_a_bad_setting_stops_the_runner_before_anything_starts(tmp_path):
    options = read_options(
        {"DATA_DIR": str(tmp_path), "LOCAL_REDIS": "private", "JWT_ALGORITHM": "ES256"}
    )
    with pytest.raises(LocalError) as caught:
        serve(options)
    assert str(caught.value) == (
        "configuration error: JWT_PRIVATE_KEY_FILE is required with JWT_ALGORITHM=ES256"
    )
    assert list(tmp_path.iterdir()) == []  # no Redis started, no state written


def test_redis_url_from_the_environment_is_used_as_is(tmp_path):
    url = "redis://127.0.0.1:1/0"
    chosen = choose_redis(read_options({"DATA_DIR": str(tmp_path), "REDIS_URL": url}))
    assert (chosen.url, chosen.process) == (url, None)


def test_the_banner_tells_which_key_signs(tmp_path):
    key_file = tmp_path / "jwt.pem"
    key_file.write_bytes(generate_private_key_pem("ES256"))
    asymmetric = {"APP_ENV": "development", "JWT_ALGORITHM": "ES256"}
    asymmetric["JWT_PRIVATE_KEY_FILE"] = str(key_file)
    text = banner(load_settings(asymmetric), asymmetric)
    assert f"ES256 private key from JWT_PRIVATE_KEY_FILE ({key_file})" in text
    assert "DEVELOPMENT" not in text
    assert "demo users: kesa / 123" in text

    development = {"APP_ENV": "development", "DEMO_USERS": ""}
    text = banner(load_settings(development), development)
    assert "the built-in DEVELOPMENT secret" in text and "demo users: none" in text

    own = {"APP_ENV": "development", "JWT_SECRET": "s" * 40, "DEMO_USERS": "amy:amy-secret-pw"}
    text = banner(load_settings(own), own)
    assert "HS256 secret from JWT_SECRET" in text and "s" * 40 not in text
    assert "demo users: amy" in text and "amy-secret-pw" not in text


# ------------------------------------------------ flask --app devtools.local, from another shell


def flask_cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "flask"), "--app", "devtools.local", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_user_reaches_the_redis_of_the_running_local_instance(tmp_path):
    redis_server_binary()
    need_venv()
    run = LocalRun(tmp_path, "private")
    try:
        run.wait_ready()
        # another shell: no APP_ENV, no REDIS_URL, only the instance's PORT and DATA_DIR
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        env.update(PORT=str(run.port), DATA_DIR=str(run.data))
        created = flask_cli(
            "create-user", "alice", env=env, stdin="alice-password-1\nalice-password-1\n"
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert "Created user 'alice'." in created.stdout
        status, body = http(
            "POST",
            f"{run.base}/public/login",
            data={"username": "alice", "password": "alice-password-1"},
        )
        assert status == 200, body

        # the username is checked before the password is asked for
        for name, message in (("alice", "already exists"), ("a!", "3-32 characters")):
            refused = flask_cli("create-user", name, env=env)
            assert refused.returncode == 1
            assert message in refused.stderr and "Password" not in refused.stdout

        # the users group reaches the same Redis: the running service sees its changes at once
        listed = flask_cli("users", "list", env=env)
        assert listed.returncode == 0 and {"alice", "kesa"} <= set(listed.stdout.split())
        disabled = flask_cli("users", "disable", "alice", env=env)
        assert disabled.returncode == 0, disabled.stdout + disabled.stderr
        assert "Disabled 'alice'; ended 1 session(s)." in disabled.stdout
        credentials = {"username": "alice", "password": "alice-password-1"}
        assert http("POST", f"{run.base}/public/login", data=credentials)[0] == 403
        deleted = flask_cli("users", "delete", "alice", "--yes", env=env)
        assert deleted.returncode == 0 and "Deleted 'alice'." in deleted.stdout
        assert http("POST", f"{run.base}/public/login", data=credentials)[0] == 401
        unknown = flask_cli("users", "show", "alice", env=env)
        assert unknown.returncode == 1 and unknown.stderr.strip() == "Error: No such user."
        assert run.signal(signal.SIGTERM) == 0, run.output()
        assert not (run.data / f"local-{run.port}.json").exists(), "state removed at exit"
    finally:
        run.stop()


def test_create_user_says_in_one_line_that_redis_does_not_answer(tmp_path):
    need_venv()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    port = free_port()  # nobody listens there
    env.update(DATA_DIR=str(tmp_path), REDIS_URL=f"redis://127.0.0.1:{port}/0")
    result = flask_cli("create-user", "bob", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Password" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Redis at 127.0.0.1:{port} did not answer" in lines[0]


def test_generate_keys_needs_neither_redis_nor_a_key_configuration(tmp_path):
    need_venv()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(
        DATA_DIR=str(tmp_path),
        APP_ENV="production",  # and no JWT_SECRET: the service itself would refuse to start
        JWT_ALGORITHM="RS256",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    target = tmp_path / "keys" / "jwt.pem"
    result = flask_cli("generate-keys", "--algorithm", "EdDSA", str(target), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_settings({"JWT_ALGORITHM": "EdDSA", "JWT_PRIVATE_KEY_FILE": str(target)})
