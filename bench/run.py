"""Benchmark flask-jwt-redis against a bare-Flask ceiling, both under gunicorn.conf.py.

    .venv/bin/python bench/run.py [--quick] [--rounds N] [--env NAME=VALUE ...] [--calibrate]

Starts, on free loopback ports: a private redis-server (temp dir, no persistence), the service
(``gunicorn -c gunicorn.conf.py main:app``), the bare app (``bench.bare_app:app``) and the floor
app (``bench.floor_app:app``) with the same environment and worker settings. Then, in every
round (the order flips each round, A B B A):

* throughput and latency: one wrk run per route (req/s, p50, p99);
* CPU per request: a fixed number of requests per route, sent by wrk in small slices
  interleaved with slices to the bare ping (bare, route, route, bare, ...); each slice's cost is
  the CPU time of the whole gunicorn process tree plus the redis-server, read before and after;
* login: throughput, CPU per login, and Argon2id hashes per second in-process.

Medians over the rounds go to a markdown table on stdout and a JSON file under bench/results/.
bench/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # devtools, and utils for the in-process hashes

from devtools.processes import free_port  # noqa: E402 (needs ROOT on the path)
from devtools.processes import start_process  # noqa: E402
from devtools.processes import start_redis_server  # noqa: E402
from devtools.processes import stop_process  # noqa: E402
from devtools.processes import wait_until  # noqa: E402

LUA_SCRIPT = BENCH / "wrk_bench.lua"
RESULTS_DIR = BENCH / "results"
BOOTSTRAP_SAMPLES = 2000
STOP_TIMEOUT = 35  # seconds for a graceful stop before SIGKILL
FULL_ROUNDS, QUICK_ROUNDS = 5, 2
# Every other setting, (full run, --quick); bench/README.md says why these values.
SETTINGS = {
    "requests": (4000, 1000),  # CPU requests per route per round (and as many to the bare ping)
    "slice": (500, 500),  # requests per CPU slice
    "duration": (5, 2),  # seconds per wrk run
    "connections": (16, 16),  # wrk -c
    "threads": (2, 2),  # wrk -t
    "login_requests": (100, 32),  # logins per round for login CPU
    "hashes": (20, 5),  # in-process Argon2id hashes per round
    "max_seconds": (600, 120),  # time limit: a full run must finish within ~10 minutes
}

DEMO_USER = "kesa"
DEMO_PASSWORD = "123"  # noqa: S105 (the development demo user's published password)
LOGIN_BODY = urllib.parse.urlencode({"username": DEMO_USER, "password": DEMO_PASSWORD})

# Service settings passed through to every gunicorn process when set in the caller's env
# (all JWT_* ones, key files included, by prefix).
PASS_THROUGH = (
    "ACCESS_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "REDIS_KEY_PREFIX",
    "TOKEN_LOOKUP",
    "LOGIN_LOCK_SECONDS",
    "COOKIE_MODE",
    "CORS_ORIGINS",
    "FORWARDED_ALLOW_IPS",
    "MAX_CONTENT_LENGTH",
)
PASS_THROUGH_PREFIXES = ("GUNICORN_", "JWT_")

TARGETS = {"welcome": 1.6, "feed_token": 1.6, "refresh": 2.5}
STRETCH = {"welcome": 1.2, "feed_token": 1.2}


@dataclass(frozen=True)
class Route:
    """One measured request shape."""

    key: str
    label: str
    server: str  # "app", "bare" or "floor"
    method: str
    path: str
    auth: str | None = None  # None, "access" (one token for the run) or "refresh" (a chain)
    body: str = ""


BARE = Route("bare", "bare ping (ceiling)", "bare", "GET", "/public/ping")
ROUTES = (
    Route("floor", "floor: bare + one EXISTS", "floor", "GET", "/floor/exists"),
    Route("ping", "ping", "app", "GET", "/public/ping"),
    Route("welcome", "welcome (token)", "app", "GET", "/user/welcome", auth="access"),
    Route("feed_anon", "feed (anonymous)", "app", "GET", "/public/feed"),
    Route("feed_token", "feed (token)", "app", "GET", "/public/feed", auth="access"),
    Route("refresh", "refresh (rotation)", "app", "GET", "/public/refresh", auth="refresh"),
)
LOGIN = Route("login", "login (Argon2id)", "app", "POST", "/public/login", body=LOGIN_BODY)
ALL_ROUTES = (BARE, *ROUTES, LOGIN)


class BenchError(RuntimeError):
    """Something the run cannot go on from; the message says what."""


# --------------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    """A process this run started, in its own session (so its whole group can be stopped)."""

    name: str
    popen: subprocess.Popen
    port: int
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """The process and all its descendants (gunicorn: master + workers)."""
        pids = [self.popen.pid]
        with contextlib.suppress(psutil.Error):
            pids += [child.pid for child in psutil.Process(self.popen.pid).children(True)]
        return sorted(pids)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, command: list[str], env: dict[str, str], port: int, logdir: Path) -> Proc:
    log = logdir / f"{name}.log"
    with log.open("wb") as sink:
        popen = start_process(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return Proc(name, popen, port, log)


def stop(proc: Proc) -> None:
    """SIGTERM the process group we started (gunicorn stops gracefully), SIGKILL if it hangs."""
    stop_process(proc.popen, STOP_TIMEOUT, group=True)


def ready(proc: Proc, probe, what: str, timeout: float = 30) -> None:
    """Wait (bounded) until ``probe()`` is true, stopping ``proc`` if it never gets there: the
    caller only learns of a process (to stop it later) once it is ready."""

    def answered() -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException):
            return not proc.alive() or probe()
        return False

    try:
        if not wait_until(answered, timeout):
            raise BenchError(
                f"{proc.name}: {what} not ready within {timeout:.0f} s:\n{proc.log_tail()}"
            )
        if not proc.alive():
            raise BenchError(f"{proc.name} exited early:\n{proc.log_tail()}")
    except BaseException:
        stop(proc)
        raise


def redis_command(port: int, *words: str) -> bytes:
    """One command over a raw RESP connection (no client library state in this process)."""
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            reply += chunk
            if not chunk or _resp_complete(reply):
                return reply


def _resp_complete(reply: bytes) -> bool:
    if reply.startswith((b"+", b"-", b":")):
        return reply.endswith(b"\r\n")
    if reply.startswith(b"$"):
        head, _, rest = reply.partition(b"\r\n")
        return int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2
    return False


def redis_info(port: int, section: str) -> dict[str, str]:
    text = redis_command(port, "INFO", section).decode(errors="replace")
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] not in "$#"
    )


def start_redis(workdir: Path, logdir: Path) -> Proc:
    """A private redis-server on a free loopback port, answering PING (no persistence)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    log = logdir / "redis-server.log"
    options = ("--save", "", "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(log))
    try:
        popen, port = start_redis_server(binary, workdir, *options, timeout=30)
    except RuntimeError as error:
        raise BenchError(str(error)) from None
    return Proc("redis-server", popen, port, log)


def server_env(args: argparse.Namespace, redis_port: int, port: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    for name, value in os.environ.items():
        if name in PASS_THROUGH or name.startswith(PASS_THROUGH_PREFIXES):
            env[name] = value
    env.update(
        APP_ENV="development",
        DEMO_USERS=f"{DEMO_USER}:{DEMO_PASSWORD}",
        LOGIN_MAX_FAILURES="1000000",
        # A run logs in hundreds of times (login's own runs, refresh's fresh sessions): beyond
        # the default 100 sessions a login would end the session of the round's access token.
        MAX_SESSIONS_PER_USER="1000000",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
    )
    env.update(args.env)
    return env


def start_gunicorn(
    name: str,
    app: str,
    args: argparse.Namespace,
    redis: Proc,
    logdir: Path,
    ready_path: str = "/public/ping",
):
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app]
    proc = start(name, command, server_env(args, redis.port, port), port, logdir)
    ready(proc, lambda: fetch(port, "GET", ready_path)[0] == 200, f"GET {ready_path}")
    # every worker must be up before the first measurement
    ready(proc, lambda: len(proc.tree()) >= args.workers + 1, f"{args.workers} workers")
    return proc


# --------------------------------------------------------------------------------------------
# HTTP (set-up and checks only; all load comes from wrk)


def fetch(port: int, method: str, path: str, headers=None, body: str = "") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = dict(headers or {})
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def login(port: int) -> dict[str, Any]:
    status, body = fetch(port, "POST", "/public/login", body=LOGIN_BODY)
    if status != 200:
        raise BenchError(f"login failed: {status} {body[:200]!r}")
    return json.loads(body)


def mint_refresh_tokens(port: int, count: int) -> list[str]:
    """``count`` live refresh tokens, one per fresh session (one login each)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [pair["refreshToken"] for pair in pool.map(lambda _: login(port), range(count))]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_routes(app_port: int, bare_port: int, floor_port: int) -> None:
    """Fail fast if a route does not answer as the benchmark assumes."""

    def expect(what: str, got: tuple[int, bytes], status: int, needle: bytes) -> None:
        if got[0] != status or needle not in got[1]:
            raise BenchError(f"{what}: expected {status} with {needle!r}, got {got}")

    expect("bare ping", fetch(bare_port, "GET", "/public/ping"), 200, b"pong")
    expect("floor", fetch(floor_port, "GET", "/floor/exists"), 200, b"exists: 0")
    expect("ping", fetch(app_port, "GET", "/public/ping"), 200, b"pong")
    tokens = login(app_port)
    access = bearer(tokens["accessToken"])
    expect("welcome", fetch(app_port, "GET", "/user/welcome", access), 200, DEMO_USER.encode())
    expect("feed anonymous", fetch(app_port, "GET", "/public/feed"), 200, b"null")
    expect("feed with token", fetch(app_port, "GET", "/public/feed", access), 200, b"kesa")
    old = bearer(tokens["refreshToken"])
    expect("refresh", fetch(app_port, "GET", "/public/refresh", old), 200, b"refreshToken")
    # rotation is real: the spent refresh token is refused (and its session ended)
    expect("refresh reuse", fetch(app_port, "GET", "/public/refresh", old), 401, b"")


# --------------------------------------------------------------------------------------------
# CPU accounting


def _sched_clock_id(pid: int) -> int:
    # Linux's CPU-time clock of a whole process (all threads, live and exited): the
    # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) encoding, read with clock_gettime(2). It has
    # nanosecond resolution, where /proc/<pid>/stat's utime+stime counts 10 ms ticks.
    return ((~pid) << 3) | 2


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` so far, to the nanosecond."""
    try:
        return time.clock_gettime(_sched_clock_id(pid))
    except OSError:  # not Linux, or a kernel that refuses: fall back to the tick counters
        return tick_seconds(pid)


def tick_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (10 ms resolution; a cross-check only)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def total_cpu(pids: list[int], reader=cpu_seconds) -> float:
    return sum(reader(pid) for pid in pids)


def quiesce(pids: list[int], limit: float = 2.0) -> None:
    """Wait until these processes are idle (< 0.25 ms CPU in 25 ms), at most ``limit`` s."""
    deadline = time.monotonic() + limit
    last = total_cpu(pids)
    while time.monotonic() < deadline:
        time.sleep(0.025)
        now = total_cpu(pids)
        if now - last < 0.00025:
            return
        last = now


# --------------------------------------------------------------------------------------------
# wrk


def run_wrk(
    args: argparse.Namespace,
    port: int,
    route: Route,
    *,
    duration: int,
    budget: int = 0,
    access: str = "",
    tokens: Path | None = None,
) -> dict[str, Any]:
    """One wrk run; ``budget`` > 0 stops each wrk thread after that many requests."""
    command = [
        shutil.which("wrk") or "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}{route.path}",
        "--",
        f"method={route.method}",
        f"path={route.path}",
        f"budget={budget}",
        f"nthreads={args.threads}",
    ]
    if route.auth == "access":
        command.append(f"auth={access}")
    if route.auth == "refresh":
        command.append(f"tokens={tokens}")
    if route.body:
        command.append(f"body={route.body}")
    popen = subprocess.Popen(  # noqa: S603 (our own fixed command line)
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(duration + 30, popen.kill)
    watchdog.start()
    stopped, result, output = 0, None, []
    try:
        assert popen.stdout is not None
        for line in popen.stdout:
            output.append(line)
            if line.startswith("BENCH_STOPPED"):
                stopped += 1
                if stopped == args.threads and popen.poll() is None:
                    # every thread has sent its budget: end wrk's -d sleep now
                    popen.send_signal(signal.SIGINT)
            elif line.startswith("BENCH_JSON "):
                result = json.loads(line[len("BENCH_JSON ") :])
        popen.wait(timeout=30)
    finally:
        watchdog.cancel()
        if popen.poll() is None:
            popen.kill()
            popen.wait(timeout=10)
    if result is None:
        stderr = popen.stderr.read() if popen.stderr else ""
        raise BenchError(f"wrk gave no result for {route.key}:\n{''.join(output)}{stderr}")
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds if seconds else 0.0
    # socket errors, non-2xx/3xx answers, and (refresh) chain answers without a new token
    result["failed"] = sum(result["errors"].values()) + result["starved"] + result["refused"]
    return result


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Bench:
    args: argparse.Namespace
    redis: Proc
    app: Proc
    bare: Proc
    floor: Proc | None
    workdir: Path
    access: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def server(self, route: Route) -> Proc:
        return {"app": self.app, "bare": self.bare, "floor": self.floor}[route.server]

    def servers(self) -> list[Proc]:
        return [proc for proc in (self.app, self.bare, self.floor) if proc is not None]

    def token_file(self, count: int) -> Path:
        path = self.workdir / "refresh-tokens.txt"
        path.write_text("\n".join(mint_refresh_tokens(self.app.port, count)) + "\n")
        return path

    def seeds(self) -> int:
        return max(32, 2 * self.args.connections)

    def wrk(self, route: Route, *, duration: int, budget: int = 0) -> dict[str, Any]:
        tokens = self.token_file(self.seeds()) if route.auth == "refresh" else None
        result = run_wrk(
            self.args,
            self.server(route).port,
            route,
            duration=duration,
            budget=budget,
            access=self.access,
            tokens=tokens,
        )
        if result["failed"]:
            self.problems.append(f"{route.key}: wrk reported failures {result}")
        return result

    def slice(self, route: Route, count: int) -> dict[str, Any]:
        """``count`` requests to ``route``; CPU of its gunicorn tree + redis, before/after."""
        server = self.server(route)
        tokens = self.token_file(self.seeds()) if route.auth == "refresh" else None
        tree, redis = server.tree(), [self.redis.popen.pid]
        pids = tree + redis
        everything = [pid for proc in self.servers() for pid in proc.tree()] + redis
        quiesce(everything)
        stats_before = redis_info(self.redis.port, "stats")
        before = (total_cpu(tree), total_cpu(redis), total_cpu(pids, tick_seconds))
        started = time.monotonic()
        result = run_wrk(
            self.args,
            server.port,
            route,
            duration=60,
            budget=max(1, count // self.args.threads),
            access=self.access,
            tokens=tokens,
        )
        quiesce(pids)
        after = (total_cpu(tree), total_cpu(redis), total_cpu(pids, tick_seconds))
        wall = time.monotonic() - started
        stats_after = redis_info(self.redis.port, "stats")

        def delta(name: str) -> int:
            return int(stats_after[name]) - int(stats_before[name])

        # Commands include those a Lua script runs; reads are the socket reads Redis served,
        # i.e. round trips (a pipeline arrives in one read). The INFO pair itself adds one
        # command (the first INFO) and two reads (the first one's EOF, the second INFO).
        commands = delta("total_commands_processed") - 1
        reads = delta("total_reads_processed") - 2
        if server.tree() != tree:
            self.problems.append(f"{route.key}: the process tree changed during a slice")
        if result["failed"]:
            self.problems.append(f"{route.key}: a CPU slice had failures {result}")
        return {
            "route": route.key,
            "sent": result["sent"],
            "completed": result["requests"],
            "gunicorn_cpu_s": after[0] - before[0],
            "redis_cpu_s": after[1] - before[1],
            "cpu_s": (after[0] - before[0]) + (after[1] - before[1]),
            "tick_cpu_s": after[2] - before[2],
            "redis_commands": commands,
            "redis_reads": reads,
            "wall_s": wall,
        }

    def throughput_pass(self, order: list[Route]) -> dict[str, Any]:
        out = {}
        for route in order:
            result = self.wrk(route, duration=self.args.duration)
            out[route.key] = result
            log(f"    wrk {route.key:<11} {result['rps']:9.0f} req/s  p50 {ms(result['p50_us'])}")
        return out

    def cpu_pass(self, routes: list[Route], bare_first: bool) -> dict[str, Any]:
        slices_per_server = max(2, 2 * round(self.args.requests / self.args.slice / 2))
        per_slice = max(1, self.args.requests // slices_per_server)
        out = {}
        for route in routes:
            first, second = (BARE, route) if bare_first else (route, BARE)
            pattern = []
            for i in range(slices_per_server):
                pattern += [first, second] if i % 2 == 0 else [second, first]
            slices = [self.slice(r, per_slice) for r in pattern]
            out[route.key] = {
                "slices": slices,
                "route": cpu_summary([s for s in slices if s["route"] == route.key]),
                "bare": cpu_summary([s for s in slices if s["route"] == BARE.key]),
            }
            mine = out[route.key]
            mine["ratio"] = mine["route"]["cpu_us"] / mine["bare"]["cpu_us"]
            log(
                f"    cpu {route.key:<11} {mine['route']['cpu_us']:8.0f} µs/req  "
                f"bare {mine['bare']['cpu_us']:6.0f}  ratio {mine['ratio']:.2f}"
            )
        return out

    def login_pass(self) -> dict[str, Any]:
        count = self.args.login_requests
        slices = [self.slice(LOGIN, count // 2) for _ in range(2)]
        return {"slices": slices, "route": cpu_summary(slices)}

    def hash_pass(self) -> dict[str, Any]:
        from utils.passwords import hash_password  # the service's own hasher and parameters

        hash_password("warm-up")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(self.args.hashes):
            hash_password(f"benchmark password {i}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {
            "hashes": self.args.hashes,
            "hashes_per_s": self.args.hashes / wall,
            "cpu_ms_per_hash": 1000 * cpu / self.args.hashes,
        }

    def round(self, number: int) -> dict[str, Any]:
        forward = number % 2 == 0
        self.access = login(self.app.port)["accessToken"]  # fresh for each round (15 min TTL)
        order = [BARE, *ROUTES, LOGIN]
        result: dict[str, Any] = {"round": number, "forward": forward}
        result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        result["throughput"] = self.throughput_pass(order if forward else order[::-1])
        routes = list(ROUTES) if forward else list(ROUTES)[::-1]
        result["cpu"] = self.cpu_pass(routes, bare_first=forward)
        result["login_cpu"] = self.login_pass()
        result["hash"] = self.hash_pass()
        bare = cpu_summary(
            [s for r in result["cpu"].values() for s in r["slices"] if s["route"] == BARE.key]
        )
        result["bare_cpu"] = bare
        result["login_cpu"]["ratio"] = result["login_cpu"]["route"]["cpu_us"] / bare["cpu_us"]
        return result

    def warm_up(self) -> None:
        self.access = login(self.app.port)["accessToken"]
        for route in ALL_ROUTES:
            self.wrk(route, duration=1)


def cpu_summary(slices: list[dict[str, Any]]) -> dict[str, float]:
    sent = sum(s["sent"] for s in slices)
    return {
        "requests": sent,
        "cpu_us": 1e6 * sum(s["cpu_s"] for s in slices) / sent,
        "gunicorn_cpu_us": 1e6 * sum(s["gunicorn_cpu_s"] for s in slices) / sent,
        "redis_cpu_us": 1e6 * sum(s["redis_cpu_s"] for s in slices) / sent,
        "tick_cpu_us": 1e6 * sum(s["tick_cpu_s"] for s in slices) / sent,
        "redis_commands_per_request": sum(s["redis_commands"] for s in slices) / sent,
        "redis_round_trips_per_request": sum(s["redis_reads"] for s in slices) / sent,
    }


# --------------------------------------------------------------------------------------------
# summary and table


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for route in ALL_ROUTES:
        wrk = [r["throughput"][route.key] for r in rounds]
        row: dict[str, Any] = {
            "label": route.label,
            "rps": median([w["rps"] for w in wrk]),
            "p50_ms": median([w["p50_us"] / 1000 for w in wrk]),
            "p99_ms": median([w["p99_us"] / 1000 for w in wrk]),
            "rps_ratio": median(
                [r["throughput"][route.key]["rps"] / r["throughput"]["bare"]["rps"] for r in rounds]
            ),
        }
        if route.key == "bare":
            cpu = [r["bare_cpu"] for r in rounds]
            ratios = [1.0 for _ in rounds]
        elif route.key == "login":
            cpu = [r["login_cpu"]["route"] for r in rounds]
            ratios = [r["login_cpu"]["ratio"] for r in rounds]
        else:
            cpu = [r["cpu"][route.key]["route"] for r in rounds]
            ratios = [r["cpu"][route.key]["ratio"] for r in rounds]
        row.update(
            cpu_us=median([c["cpu_us"] for c in cpu]),
            cpu_us_min=min(c["cpu_us"] for c in cpu),
            cpu_us_max=max(c["cpu_us"] for c in cpu),
            redis_cpu_us=median([c["redis_cpu_us"] for c in cpu]),
            tick_cpu_us=median([c["tick_cpu_us"] for c in cpu]),
            redis_commands=median([c["redis_commands_per_request"] for c in cpu]),
            redis_round_trips=median([c["redis_round_trips_per_request"] for c in cpu]),
            cpu_ratio=median(ratios),
            cpu_ratio_min=min(ratios),
            cpu_ratio_max=max(ratios),
        )
        summary[route.key] = row
    for route in ROUTES:
        blocks = abba_blocks(rounds, route.key)
        summary[route.key]["cpu_ratio_pooled"] = pooled_ratio(blocks)
        low, high = bootstrap_interval(blocks)
        summary[route.key]["cpu_ratio_ci95"] = [low, high]
    hashes = [r["hash"] for r in rounds]
    summary["hash"] = {
        "hashes_per_s": median([h["hashes_per_s"] for h in hashes]),
        "cpu_ms_per_hash": median([h["cpu_ms_per_hash"] for h in hashes]),
    }
    summary["targets"] = {
        key: {
            "ratio": summary[key]["cpu_ratio"],
            "target": limit,
            "met": summary[key]["cpu_ratio"] <= limit,
            "stretch": STRETCH.get(key),
            "stretch_met": summary[key]["cpu_ratio"] <= STRETCH[key] if key in STRETCH else None,
        }
        for key, limit in TARGETS.items()
    }
    return summary


def abba_blocks(rounds: list[dict[str, Any]], key: str) -> list[tuple[float, int, float, int]]:
    """Each A B B A group of four slices as (route CPU s, route requests, bare CPU s, bare
    requests): the unit that interleaving makes comparable."""
    blocks = []
    for round_ in rounds:
        slices = round_["cpu"][key]["slices"]
        for start in range(0, len(slices), 4):
            group = slices[start : start + 4]
            mine = [s for s in group if s["route"] == key]
            bare = [s for s in group if s["route"] == BARE.key]
            if mine and bare:
                blocks.append(
                    (
                        sum(s["cpu_s"] for s in mine),
                        sum(s["sent"] for s in mine),
                        sum(s["cpu_s"] for s in bare),
                        sum(s["sent"] for s in bare),
                    )
                )
    return blocks


def pooled_ratio(blocks: list[tuple[float, int, float, int]]) -> float:
    """(Σ route CPU ÷ Σ route requests) ÷ (Σ bare CPU ÷ Σ bare requests)."""
    route = sum(b[0] for b in blocks) / sum(b[1] for b in blocks)
    bare = sum(b[2] for b in blocks) / sum(b[3] for b in blocks)
    return route / bare


def bootstrap_interval(blocks: list[tuple[float, int, float, int]]) -> tuple[float, float]:
    """A 95 % bootstrap interval of the pooled ratio, resampling whole A B B A blocks."""
    rng = random.Random(5)  # noqa: S311 (statistics, not security)
    ratios = sorted(
        pooled_ratio(rng.choices(blocks, k=len(blocks))) for _ in range(BOOTSTRAP_SAMPLES)
    )
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.2f} ms"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| route | req/s | xbare req/s | p50 ms | p99 ms | CPU µs/req | of which Redis "
        "| xbare CPU | rounds min-max | 95% CI | Redis round trips/req | Redis cmds/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for route in ALL_ROUTES:
        row = summary[route.key]
        ci = row.get("cpu_ratio_ci95")
        interval = f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"
        lines.append(
            f"| {row['label']} | {row['rps']:,.0f} | {row['rps_ratio']:.2f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_us']:,.0f} "
            f"| {row['redis_cpu_us']:,.0f} | **{row['cpu_ratio']:.2f}** "
            f"| {row['cpu_ratio_min']:.2f}-{row['cpu_ratio_max']:.2f} | {interval} "
            f"| {row['redis_round_trips']:.2f} | {row['redis_commands']:.2f} |"
        )
    hashes = summary["hash"]
    lines += [
        "",
        f"Argon2id `hash_password` in-process, one thread: {hashes['hashes_per_s']:.1f} hashes/s "
        f"({hashes['cpu_ms_per_hash']:.1f} ms CPU per hash).",
        "",
        "Targets (CPU per request ÷ bare ping's, same run): "
        + "; ".join(
            f"{key} {t['ratio']:.2f} ≤ {t['target']} {'met' if t['met'] else 'NOT met'}"
            + (
                f" (stretch {t['stretch']}: {'met' if t['stretch_met'] else 'not met'})"
                if t["stretch"]
                else ""
            )
            for key, t in summary["targets"].items()
        )
        + ".",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# metadata


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", meminfo, re.MULTILINE).group(1))
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(  # noqa: S603 (fixed command lines)
                command, capture_output=True, text=True, timeout=10, check=False
            )
            return (done.stdout or done.stderr).strip().splitlines()[0]
        return "unknown"

    found = {"python": platform.python_version()}
    for package in ("gunicorn", "flask", "flask-jwt-extended", "pyjwt", "redis", "hiredis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    found["redis-server"] = first_line([shutil.which("redis-server") or "redis-server", "-v"])
    found["wrk"] = first_line([shutil.which("wrk") or "wrk", "-v"])
    return found


def git_revision() -> str:
    git = shutil.which("git") or "git"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(  # noqa: S603 (read-only git queries)
            [git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    return "unknown"


# --------------------------------------------------------------------------------------------
# main


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (under ~90 s)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, quick 2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every server (repeatable), e.g. GUNICORN_WORKER_CLASS=sync",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="A/A check of the CPU ratio's noise: a second bare app instead of the service",
    )
    args = parser.parse_args(argv)
    for name, (full, quick) in SETTINGS.items():
        setattr(args, name, quick if args.quick else full)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else FULL_ROUNDS
    try:
        args.env = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        parser.error("--env takes NAME=VALUE")
    args.workers = int(args.env.get("WEB_CONCURRENCY") or os.environ.get("WEB_CONCURRENCY") or 2)
    if args.rounds < 1 or args.workers < 1:
        parser.error("rounds and WEB_CONCURRENCY must be positive")
    return args


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[Bench]:
    workdir = Path(tempfile.mkdtemp(prefix="flask-jwt-redis-bench-"))
    started: list[Proc] = []
    try:
        redis = start_redis(workdir, workdir)
        started.append(redis)
        # --calibrate: an A/A check, the service replaced by a second bare app
        app = (
            start_gunicorn("bare-flask-2", "bench.bare_app:app", args, redis, workdir)
            if args.calibrate
            else start_gunicorn("flask-jwt-redis", "main:app", args, redis, workdir)
        )
        started.append(app)
        bare = start_gunicorn("bare-flask", "bench.bare_app:app", args, redis, workdir)
        started.append(bare)
        floor = None
        if not args.calibrate:
            floor = start_gunicorn(
                "floor", "bench.floor_app:app", args, redis, workdir, ready_path="/floor/exists"
            )
            started.append(floor)
        bench = Bench(args, redis, app, bare, floor, workdir)
        yield bench
        for proc in started:
            if not proc.alive():
                bench.problems.append(f"{proc.name} died during the run:\n{proc.log_tail()}")
            elif proc is not redis and "Traceback" in proc.log.read_text(errors="replace"):
                bench.problems.append(f"{proc.name} logged a traceback:\n{proc.log_tail()}")
    finally:
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def calibrate(args: argparse.Namespace) -> int:
    """A/A: the CPU measurement of a second bare app against the bare app. The true ratio is
    1, so the spread shows how far this machine's noise moves a ratio (no other output)."""
    route = Route("bare_2", "second bare ping", "app", "GET", "/public/ping")
    ratios = []
    began = time.monotonic()
    with services(args) as bench:
        for number in range(args.rounds):
            if time.monotonic() - began > args.max_seconds:
                break
            ratios.append(bench.cpu_pass([route], bare_first=number % 2 == 0)[route.key]["ratio"])
        problems = bench.problems
    spread = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
    print(
        f"A/A calibration, {len(ratios)} rounds of {args.requests} requests per server: "
        f"ratios {', '.join(f'{r:.3f}' for r in ratios)}; median {median(ratios):.3f}, "
        f"standard deviation {spread:.3f} per round "
        f"(so about ±{2 * spread / len(ratios) ** 0.5:.3f} on a {len(ratios)}-round median)"
    )
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.calibrate:
        return calibrate(args)
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/bin/{tool}").exists():
            log(f"bench: {tool} not found (apt-get install {tool.split('-')[0]})")
            return 2
    began = time.monotonic()
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_revision(),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "rounds": args.rounds,
            "cpu_requests_per_route_per_round": args.requests,
            "slice": args.slice,
            "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency",
            "workers": args.workers,
            "extra_env": args.env,
            "gunicorn_threads": {**os.environ, **args.env}.get(
                "GUNICORN_THREADS", "(gunicorn.conf.py default)"
            ),
            "login_requests_per_round": args.login_requests,
            "hashes_per_round": args.hashes,
            "quick": args.quick,
        },
    }
    log(f"bench: {meta['git']}, {args.rounds} rounds, {args.workers} workers per server")
    truncated = False
    with services(args) as bench:
        check_routes(bench.app.port, bench.bare.port, bench.floor.port)
        log("bench: warming up")
        bench.warm_up()
        longest = 0.0
        for number in range(args.rounds):
            elapsed = time.monotonic() - began
            if number and elapsed + longest > args.max_seconds:
                truncated = True
                bench.problems.append(
                    f"stopped after {number} rounds: another would pass {args.max_seconds:.0f} s"
                )
                break
            log(f"bench: round {number + 1}/{args.rounds}")
            round_began = time.monotonic()
            bench.rounds.append(bench.round(number))
            longest = max(longest, time.monotonic() - round_began)
        problems = bench.problems
        rounds = bench.rounds
    elapsed = time.monotonic() - began
    meta["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    meta["elapsed_s"] = round(elapsed, 1)
    meta["truncated"] = truncated
    summary = summarize(rounds)
    meta["settings"]["rounds_done"] = len(rounds)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
    document = {"meta": meta, "summary": summary, "problems": problems, "rounds": rounds}
    out.write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS_DIR / "latest.json").write_text(json.dumps(document, indent=1) + "\n")
    print(markdown_table(summary))
    print(
        "\npooled CPU ratios: "
        + ", ".join(f"{r.key} {summary[r.key]['cpu_ratio_pooled']:.2f}" for r in ROUTES)
    )
    over = elapsed > args.max_seconds
    print(
        f"\n{len(rounds)} rounds in {elapsed:.0f} s (limit {args.max_seconds:.0f} s"
        f"{': TOO SLOW' if over else ''}); results {out.relative_to(ROOT)}"
    )
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems or over or truncated else 0


if __name__ == "__main__":
    # SIGTERM (timeout, CI, kill) unwinds like Ctrl-C, so the servers started in their own
    # process groups are stopped by services()'s finally instead of outliving the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as error:
        log(f"bench: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
