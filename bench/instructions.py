"""Instructions per request, in process, counted by valgrind: a noise-free A/B of code changes.

    .venv/bin/python bench/instructions.py [--requests N] [--routes ping,welcome,refresh]

CPU times on this shared machine move by tens of percent; an instruction count does not. For
each route this runs the app twice under ``valgrind --tool=callgrind`` (a private
redis-server, the app called through ``app.wsgi_app`` with no HTTP server, a login and a
warm-up first), once with a few requests and once with ``N`` more; the difference ÷ ``N`` is
the app's user-space instructions per request. It leaves out gunicorn, the kernel (socket
system calls) and redis-server, so it compares versions of the app's own code, not routes
against the bare ping: for that, use bench/run.py. Run it at two commits to compare them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.run import DEMO_PASSWORD  # noqa: E402 (needs ROOT on the path)
from bench.run import DEMO_USER  # noqa: E402
from bench.run import LOGIN_BODY  # noqa: E402
from bench.run import ROUTES as BENCH_ROUTES  # noqa: E402
from bench.run import start_redis  # noqa: E402
from bench.run import stop  # noqa: E402

WARM_UP = 50
ROUTES = ("ping", "welcome", "feed_token", "refresh")
PATHS = {route.key: route.path for route in BENCH_ROUTES}  # the same requests as bench/run.py


def count_instructions(route: str, requests: int) -> int:
    """Instructions callgrind counted for a whole child run of ``requests`` requests."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        route,
        str(requests),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # same dict layouts in every run
    done = subprocess.run(  # noqa: S603 (our own fixed command line)
        command, capture_output=True, text=True, env=env, timeout=1800
    )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            if done.returncode != 0:
                break
            return int(line.rsplit(":", 1)[1].strip())
    raise SystemExit(f"instructions: the {route} run failed:\n{done.stderr[-2000:]}")


def child(route: str, requests: int) -> None:
    """Serve ``requests`` requests of ``route`` in this process, against a private Redis."""
    from initialize import create_app

    workdir = Path(tempfile.mkdtemp(prefix="flask-jwt-redis-instructions-"))
    redis = start_redis(workdir, workdir)
    try:
        app = create_app(
            {
                "APP_ENV": "development",
                "DEMO_USERS": f"{DEMO_USER}:{DEMO_PASSWORD}",
                "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
                "LOGIN_MAX_FAILURES": "1000000",
            }
        )
        serve = _requests(app, route)
        for _ in range(WARM_UP + requests):
            serve()
    finally:
        stop(redis)
        shutil.rmtree(workdir, ignore_errors=True)


def _requests(app, route: str):
    """A function that sends one request of ``route`` and checks its answer."""

    def call(path: str, headers: dict[str, str], method: str = "GET", body: bytes = b"") -> bytes:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "9090",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            **headers,
        }
        status = []
        answer = b"".join(
            app.wsgi_app(environ, lambda code, _headers, _exc=None: status.append(code))
        )
        if not status[0].startswith("200"):
            raise SystemExit(f"instructions: {method} {path} answered {status[0]}: {answer!r}")
        return answer

    form = {"CONTENT_TYPE": "application/x-www-form-urlencoded"}
    tokens = json.loads(call("/public/login", form, "POST", LOGIN_BODY.encode()))
    access = {"HTTP_AUTHORIZATION": f"Bearer {tokens['accessToken']}"}
    chain = [tokens["refreshToken"]]

    def refresh() -> None:
        answer = call(PATHS["refresh"], {"HTTP_AUTHORIZATION": f"Bearer {chain[0]}"})
        chain[0] = json.loads(answer)["refreshToken"]  # every request spends a fresh token

    return {
        "ping": lambda: call(PATHS["ping"], {}),
        "welcome": lambda: call(PATHS["welcome"], access),
        "feed_token": lambda: call(PATHS["feed_token"], access),
        "refresh": refresh,
    }[route]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests counted per route")
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma list of routes")
    parser.add_argument("--child", nargs=2, metavar=("ROUTE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    routes = [route for route in args.routes.split(",") if route]
    unknown = set(routes) - set(ROUTES)
    if unknown or args.requests < 1:
        parser.error(f"routes are {', '.join(ROUTES)}; requests must be positive")
    if not shutil.which("valgrind"):
        print("instructions: valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    print("| route | instructions per request |\n| --- | ---: |")
    for route in routes:
        few, many = count_instructions(route, 0), count_instructions(route, args.requests)
        print(f"| {route} | {(many - few) / args.requests:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
