"""The Docker mode of ``./run.sh``: the tutorial's two containers, started and stopped.

``./run.sh --docker`` runs ``python3 -m devtools.docker up`` and ``./run.sh stop`` runs
``python3 -m devtools.docker stop``. ``up`` builds the image with ./build.sh when it is missing,
creates the network ``my-net`` and the volume ``flask-jwt-redis-data`` when missing, replaces the
containers ``my-redis`` (redis:alpine, AOF on) and ``flask-jwt-redis`` (published on
``DOCKER_PUBLISH``), both ``--restart always``, and prints where the app answers. ``stop``
removes both containers and keeps the network and the volume.

Standard library only: it runs with the machine's python3, before any .venv exists. The JWT
secret (devtools.secret) reaches the app container through the environment of its
``docker run`` (``-e JWT_SECRET`` without a value), never through a command line or a message;
the optional settings in :data:`PASSTHROUGH_VARS` travel the same way, by name.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.secret import SecretError
from devtools.secret import docker_secret

ROOT = Path(__file__).resolve().parent.parent
# The tutorial's names (my-net, my-redis); the app container and image are ours.
NETWORK = "my-net"
REDIS_CONTAINER = "my-redis"
REDIS_IMAGE = "redis:alpine"
REDIS_VOLUME = "flask-jwt-redis-data"
APP_CONTAINER = "flask-jwt-redis"
APP_IMAGE = "flask-jwt-redis:latest"
APP_PORT = 9090  # inside the container (the image's BIND)
# Where the app is published on the host: [address:]port; the tutorial's 19090 = every interface.
DEFAULT_PUBLISH = "19090"
PUBLISH_FORMAT = re.compile(r"((\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?\d{1,5}", re.ASCII)
STOP_SECONDS = 30  # docker stop -t: the app's graceful shutdown fits in it
# Optional settings handed to the app container when they are set (even empty) here.
PASSTHROUGH_VARS = (
    "ACCESS_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "TOKEN_LOOKUP",
    "COOKIE_MODE",
    "CORS_ORIGINS",
    "DEMO_USERS",
    "LOGIN_MAX_FAILURES",
    "LOGIN_LOCK_SECONDS",
    "ACCOUNT_MAX_FAILURES",
    "REGISTER_MAX_PER_ADDRESS",
    "REGISTER_WINDOW_SECONDS",
    "REDIS_KEY_PREFIX",
    "MAX_SESSIONS_PER_USER",
    "REFRESH_REUSE_GRACE_SECONDS",
    "INTROSPECTION_CLIENTS",
    "ADMIN_CLIENTS",
    "ADMIN_ALLOW_IPS",
    "LOG_FORMAT",
    "METRICS_ALLOW_IPS",
    "CLIENT_HEADER_TIMEOUT",
)


class DockerError(Exception):
    """Why the Docker mode stops; ``str()`` is the one line to print, ``status`` the exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def log(message: str) -> None:
    """Progress lines on stderr, as run.sh prints them."""
    print(f"run.sh: {message}", file=sys.stderr, flush=True)


def docker(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``docker args``; its stdout. Its stderr reaches the user; a failure stops the mode
    with docker's exit status."""
    result = _run(args, stdout=subprocess.PIPE, text=True, env=env)
    if result.returncode != 0:
        raise DockerError(f"docker {args[0]} failed (exit {result.returncode})", result.returncode)
    return result.stdout


def _run(args: Sequence[str], **options: Any) -> subprocess.CompletedProcess:
    # The user's docker CLI from PATH, as run.sh always called it; the arguments are ours.
    return subprocess.run(["docker", *args], check=False, **options)  # noqa: S603, S607


def engine_answers() -> bool:
    """Whether a Docker engine answers ``docker info``."""
    return _quiet("info")


def exists(kind: str, name: str) -> bool:
    """True when ``docker <kind> inspect <name>`` finds it (network, volume, image, container)."""
    return _quiet(kind, "inspect", name)


def _quiet(*args: str) -> bool:
    return _run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def require_docker() -> None:
    """Stop with a clear line unless the docker CLI is installed and an engine answers."""
    if shutil.which("docker") is None:
        raise DockerError("docker is not installed (or not on PATH)")
    if not engine_answers():
        raise DockerError(
            "no Docker engine answers ('docker info' failed): start Docker, or use ./run.sh --local"
        )


def check_publish(publish: str) -> str:
    """``publish`` when it is ``[address:]port`` (an IPv4 address or a bracketed IPv6 one)."""
    if not PUBLISH_FORMAT.fullmatch(publish):
        raise DockerError(
            "DOCKER_PUBLISH must be [address:]port, e.g. 19090 or 127.0.0.1:19090"
            f" (got '{publish}')"
        )
    return publish


def curl_host(publish: str) -> str:
    """The address that reaches the published port from this machine."""
    address = publish.rpartition(":")[0] if ":" in publish else "127.0.0.1"
    every_interface = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104
    return every_interface.get(address, address)


def passthrough_args(environ: Mapping[str, str]) -> list[str]:
    """``-e NAME`` for each optional setting set in ``environ``: by name, so no value is on a
    command line."""
    return [arg for name in PASSTHROUGH_VARS if name in environ for arg in ("-e", name)]


def remove_container(name: str) -> None:
    """Stop (gracefully) and remove container ``name`` when it exists."""
    if exists("container", name):
        log(f"stopping and removing container {name}")
        _run(("stop", "-t", str(STOP_SECONDS), name), stdout=subprocess.DEVNULL)  # may fail
        docker("rm", "-f", name)


def stop() -> None:
    """``./run.sh stop``: remove both containers; the network and the volume are kept."""
    require_docker()
    remove_container(APP_CONTAINER)
    remove_container(REDIS_CONTAINER)
    log(f"stopped (network {NETWORK} and volume {REDIS_VOLUME} are kept)")


def up(environ: Mapping[str, str], root: Path = ROOT) -> None:
    """``./run.sh --docker``: (re)start Redis and the app in containers (module docstring)."""
    require_docker()
    publish = check_publish(environ.get("DOCKER_PUBLISH") or DEFAULT_PUBLISH)
    if not exists("image", APP_IMAGE):
        log(f"image {APP_IMAGE} not found: building it first (./build.sh)")
        built = subprocess.run([str(root / "build.sh")], check=False)  # noqa: S603 - ours
        if built.returncode != 0:
            raise DockerError("./build.sh failed", built.returncode)
    data_dir = Path(environ.get("DATA_DIR") or root / "data")
    try:
        secret = docker_secret(environ, data_dir)
    except SecretError as error:
        raise DockerError(str(error)) from None

    if not exists("network", NETWORK):
        log(f"creating network {NETWORK}")
        docker("network", "create", "--driver", "bridge", NETWORK)
    if not exists("volume", REDIS_VOLUME):
        log(f"creating volume {REDIS_VOLUME}")
        docker("volume", "create", REDIS_VOLUME)

    remove_container(APP_CONTAINER)
    remove_container(REDIS_CONTAINER)

    log(f"starting {REDIS_CONTAINER} ({REDIS_IMAGE}, AOF on, data in volume {REDIS_VOLUME})")
    docker(
        "run", "-d",
        "--name", REDIS_CONTAINER,
        "--restart", "always",
        "--network", NETWORK,
        "-v", f"{REDIS_VOLUME}:/data",
        REDIS_IMAGE,
        "redis-server", "--appendonly", "yes",
    )  # fmt: skip

    log(f"starting {APP_CONTAINER} ({APP_IMAGE})")
    # The secret travels in this command's environment only (-e JWT_SECRET without a value).
    docker(
        "run", "-d",
        "--name", APP_CONTAINER,
        "--restart", "always",
        "--network", NETWORK,
        "-p", f"{publish}:{APP_PORT}",
        "-e", "APP_ENV=production",
        "-e", f"REDIS_URL=redis://{REDIS_CONTAINER}:6379/0",
        "-e", "JWT_SECRET",
        *passthrough_args(environ),
        APP_IMAGE,
        env={**environ, "JWT_SECRET": secret},
    )  # fmt: skip

    # What the engine really publishes (e.g. 0.0.0.0:19090 and [::]:19090 for every interface).
    published = " ".join(docker("port", APP_CONTAINER, f"{APP_PORT}/tcp").splitlines())
    log(f"published on {published}")
    log(
        f"up: curl http://{curl_host(publish)}:{publish.rpartition(':')[2]}/public/ping ;"
        f" logs: docker logs -f {APP_CONTAINER} ; stop: ./run.sh stop"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python3 -m devtools.docker up|stop`` (run.sh --docker, run.sh stop)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["up"], ["stop"]):
        print("usage: python3 -m devtools.docker up|stop", file=sys.stderr)
        return 2
    try:
        if args == ["up"]:
            up(os.environ)
        else:
            stop()
    except DockerError as error:
        print(f"run.sh: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:  # Ctrl-C: docker has stopped too; no traceback
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
