"""The image for real: ./build.sh and ./run.sh --docker on a private Docker engine.

The base images are the local stand-ins of tests/docker/standins.py, tagged with the registry
names, so the Dockerfile, build.sh and run.sh run exactly as a user runs them. Only loopback
addresses and the engine's own container networks are used; every container, network and
volume is removed at the end with the engine (tests/docker/conftest.py).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.processes import free_port
from devtools.processes import wait_until
from tests.conftest import SERVICE_VARIABLES
from tests.docker.engine import PrivateEngine
from tests.docker.report import REPORT
from tests.docker.standins import ensure_standin_images
from tests.loopback import http

REPO = Path(__file__).resolve().parents[2]
IMAGE = "flask-jwt-redis:latest"
PASSWORD = "correct-horse-battery"


@dataclass
class Built:
    """The image and what building it twice printed."""

    engine: PrivateEngine
    first_build: str
    second_build: str
    image_id: str


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, **kwargs)


def build(engine: PrivateEngine) -> str:
    """``./build.sh --network host`` as a user runs it; its output."""
    result = subprocess.run(
        ["./build.sh", "--network", "host"],
        cwd=REPO,
        env=engine.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def built(engine: PrivateEngine) -> Built:
    started = time.monotonic()
    how, seconds = ensure_standin_images(
        lambda argv, **kw: _run(argv, capture_output=True, **kw),
        lambda args: engine.run(*args, capture=True),
    )
    REPORT["stand-in base images"] = f"{seconds:.0f} s ({how})"
    first_started = time.monotonic()
    first = build(engine)
    REPORT["./build.sh (empty cache)"] = f"{time.monotonic() - first_started:.0f} s"
    image_id = engine.run("image", "inspect", "-f", "{{.Id}}", IMAGE, capture=True).stdout
    second_started = time.monotonic()
    second = build(engine)
    REPORT["./build.sh again (nothing changed)"] = f"{time.monotonic() - second_started:.0f} s"
    size = int(engine.run("image", "inspect", "-f", "{{.Size}}", IMAGE, capture=True).stdout)
    REPORT["image size"] = f"{size / 1e6:.1f} MB ({size} bytes, as `docker images` counts)"
    REPORT["empty engine to built image"] = f"{time.monotonic() - started:.0f} s"
    return Built(engine, first, second, image_id.strip())


# ------------------------------------------------------------------------------ HTTP helpers


def serving(base: str) -> bool:
    try:
        return http("GET", f"{base}/readyz")[0] == 200
    except OSError:
        return False


def login(base: str, username: str, password: str = PASSWORD) -> dict:
    status, body = http(
        "POST", f"{base}/public/login", data={"username": username, "password": password}
    )
    assert status == 200, body
    return json.loads(body)


def tutorial_session(base: str, username: str) -> dict:
    """register → form-post login → welcome → refresh → logout → 401; the live tokens."""
    assert http("GET", f"{base}/public/ping") == (200, "pong")
    status, body = http(
        "POST", f"{base}/public/register", data={"username": username, "password": PASSWORD}
    )
    assert status == 201, body
    tokens = login(base, username)
    welcome = (200, f"Welcome ! {username}")
    assert http("GET", f"{base}/user/welcome", token=tokens["accessToken"]) == welcome
    status, body = http("GET", f"{base}/public/refresh", token=tokens["refreshToken"])
    assert status == 200, body
    fresh = json.loads(body)
    assert http("GET", f"{base}/user/logout", token=fresh["accessToken"]) == (
        200,
        "Logout success",
    )
    assert http("GET", f"{base}/user/welcome", token=fresh["accessToken"])[0] == 401
    kept = login(base, username)  # a live session for the persistence checks
    assert http("GET", f"{base}/user/welcome", token=kept["accessToken"]) == welcome
    return kept


def health(engine: PrivateEngine, container: str) -> str:
    return engine.run(
        "inspect", "-f", "{{.State.Health.Status}}", container, capture=True
    ).stdout.strip()


# ----------------------------------------------------------------------------------- tests


def test_the_image_runs_as_nonroot_without_a_shell(built: Built):
    engine = built.engine
    config = json.loads(engine.run("image", "inspect", IMAGE, capture=True).stdout)[0]["Config"]
    assert config["User"] == "nonroot"
    assert config["Entrypoint"] == ["/venv/bin/gunicorn", "-c", "gunicorn.conf.py", "main:app"]
    probe = (
        "import os, shutil; print(os.getuid(), os.getgid(), shutil.which('sh'),"
        " any(os.path.exists(p) for p in ('/bin/sh', '/bin/bash', '/usr/bin/sh')),"
        " os.path.isdir('/app/tests'), os.path.isdir('/app/devtools'))"
    )
    result = engine.run(
        "run", "--rm", "--network", "none", "--entrypoint", "/venv/bin/python3", IMAGE,
        "-c", probe, capture=True,
    )  # fmt: skip
    assert result.stdout.split() == ["65532", "65532", "None", "False", "False", "False"]
    no_shell = engine.run(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", IMAGE, "-c", "true",
        check=False, capture=True,
    )  # fmt: skip
    assert no_shell.returncode != 0


def test_host_network_tutorial_session_and_health_on_another_port(built: Built):
    engine = built.engine
    redis_port, app_port = free_port(), free_port()
    engine.run(
        "run", "-d", "--name", "host-redis", "--network", "host", "redis:alpine",
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", capture=True,
    )  # fmt: skip
    engine.run(
        "run", "-d", "--name", "host-app", "--network", "host", "--health-interval", "1s",
        "-e", "APP_ENV=production", "-e", "JWT_SECRET",
        "-e", f"REDIS_URL=redis://127.0.0.1:{redis_port}/0",
        "-e", f"PORT={app_port}", "-e", f"BIND=127.0.0.1:{app_port}",
        IMAGE,
        env={"JWT_SECRET": uuid.uuid4().hex * 2}, capture=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{app_port}"
        assert wait_until(lambda: serving(base), 60, 0.5), logs(engine, "host-app")
        tutorial_session(base, "hostnet")
        assert wait_until(lambda: health(engine, "host-app") == "healthy", 60, 0.5)
    finally:
        engine.run("rm", "-f", "host-app", "host-redis", capture=True)


def logs(engine: PrivateEngine, container: str) -> str:
    result = engine.run("logs", "--tail", "40", container, check=False, capture=True)
    return result.stdout + result.stderr


def run_sh(engine: PrivateEngine, data_dir: Path, publish: str, *args: str) -> str:
    environ = {k: v for k, v in engine.env.items() if k not in SERVICE_VARIABLES}
    environ.update(DATA_DIR=str(data_dir), DOCKER_PUBLISH=publish)
    result = subprocess.run(
        ["./run.sh", *args],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def trickled_publish(port: int, token: str) -> Iterator[bytes]:
    """A multipart upload sent in two halves; yields between them, then yields the answer."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\n{token}\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nclip\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="a.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n{'x' * 65536}\r\n--{boundary}--\r\n",
    ]
    body = "".join(parts).encode()
    head = (
        f"POST /user/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=40) as sock:
        sock.sendall(head + body[:1000])
        yield b""
        sock.sendall(body[1000:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        yield answer


def test_run_sh_docker_deployment(built: Built, tmp_path: Path):
    engine = built.engine
    port = free_port()
    publish = f"127.0.0.1:{port}"
    base = f"http://{publish}"
    data = tmp_path / "data"

    started = time.monotonic()
    out = run_sh(engine, data, publish, "--docker")
    assert f"published on {publish}" in out, out
    assert wait_until(lambda: serving(base), 60, 0.5), logs(engine, "flask-jwt-redis")
    REPORT["./run.sh --docker to serving"] = f"{time.monotonic() - started:.0f} s"
    tokens = tutorial_session(base, "kesa")

    # flask create-user through docker run, on my-net, the secret passed by name only
    secret = (data / "secret").read_text().strip()
    created = engine.run(
        "run", "--rm", "--network", "my-net", "--entrypoint", "/venv/bin/flask",
        "-e", "APP_ENV=production", "-e", "JWT_SECRET", "-e", "REDIS_URL=redis://my-redis:6379/0",
        IMAGE, "--app", "main", "create-user", "carol", "--password", PASSWORD,
        env={"JWT_SECRET": secret}, capture=True,
    )  # fmt: skip
    assert "Created user 'carol'." in created.stdout, created.stdout + created.stderr
    login(base, "carol")

    # a second ./run.sh --docker: new containers, the same volume and secret
    run_sh(engine, data, publish, "--docker")
    assert wait_until(lambda: serving(base), 60, 0.5), logs(engine, "flask-jwt-redis")
    assert http("GET", f"{base}/user/welcome", token=tokens["accessToken"]) == (
        200,
        "Welcome ! kesa",
    )
    login(base, "carol")

    # docker restart my-redis: the AOF brings users and sessions back
    engine.run("restart", "my-redis", capture=True)
    assert wait_until(lambda: serving(base), 30, 0.5)
    assert http("GET", f"{base}/user/welcome", token=tokens["accessToken"])[0] == 200
    status, body = http("GET", f"{base}/public/refresh", token=tokens["refreshToken"])
    assert status == 200, body
    after_restart = json.loads(body)

    # the image's own health check (30 s interval) turns healthy
    assert wait_until(lambda: health(engine, "flask-jwt-redis") == "healthy", 90, 1)

    # docker stop drains in-flight requests and exits 0 within the grace time
    uploads = [trickled_publish(port, after_restart["accessToken"]) for _ in range(4)]
    for upload in uploads:
        next(upload)  # headers and the start of the body are in
    time.sleep(1.0)
    stopper: dict[str, float] = {}

    def stop() -> None:
        begun = time.monotonic()
        engine.run("stop", "-t", "30", "flask-jwt-redis", capture=True)
        stopper["seconds"] = time.monotonic() - begun

    thread = threading.Thread(target=stop)
    thread.start()
    # SIGTERM has reached gunicorn (its master says so) while the uploads are still in flight
    assert wait_until(lambda: "Handling signal: term" in logs(engine, "flask-jwt-redis"), 30, 0.2)
    answers = [next(upload) for upload in uploads]
    thread.join(60)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert b'"bytes":' in answer
    state = json.loads(engine.run("inspect", "flask-jwt-redis", capture=True).stdout)[0]["State"]
    assert state["ExitCode"] == 0, logs(engine, "flask-jwt-redis")
    assert stopper["seconds"] < 30
    REPORT["docker stop with 4 uploads in flight"] = f"{stopper['seconds']:.1f} s, exit 0"

    # ./run.sh stop removes the containers and keeps the volume and the network
    run_sh(engine, data, publish, "stop")
    assert engine.ids("ps", "-aq") == []
    engine.run("volume", "inspect", "flask-jwt-redis-data", capture=True)
    engine.run("network", "inspect", "my-net", capture=True)


def test_a_second_build_reuses_every_cached_layer(built: Built):
    steps = re.findall(r"^Step \d+/\d+ : (\w+)", built.second_build, re.M)
    assert steps, built.second_build
    not_from = [step for step in steps if step != "FROM"]
    assert built.second_build.count("---> Using cache") == len(not_from), built.second_build
    image_id = built.engine.run("image", "inspect", "-f", "{{.Id}}", IMAGE, capture=True).stdout
    assert image_id.strip() == built.image_id
