"""What a logout costs under Sentinel with and without waiting for the replica (issue 21).

    .venv/bin/python bench/durable_logout.py [--logouts N] [--rounds R]

Starts, on free loopback ports in a temporary directory: a redis-server primary, one replica
(``--replicaof``) and one redis-sentinel watching them; builds two apps in this process on that
group (``REDIS_MODE=sentinel``), one with ``REDIS_WAIT_REPLICAS=1`` and one with ``0``, and
times ``POST /user/logout`` through each app's test client, alternating request by request
(wait, no wait, no wait, wait, ...) so that both see the same machine at the same moments.
The sessions are made beforehand without a password hash (only logouts are timed). Prints the
median and p90 in microseconds per request of each, per round and over all rounds. Bounded:
N logouts per app per round (default 300), R rounds (default 3), and a 120 s limit overall;
every process it started is stopped by its handle in a ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from devtools.processes import free_port  # noqa: E402
from devtools.processes import start_process  # noqa: E402
from devtools.processes import start_redis_server  # noqa: E402
from devtools.processes import stop_process  # noqa: E402
from devtools.processes import wait_until  # noqa: E402

MASTER = "mymaster"
LIMIT_SECONDS = 120.0


def start_group(directory: Path) -> tuple[list, int]:
    """A primary, its replica in sync, one sentinel that knows both; (processes, sentinel port)."""
    started = []
    primary, primary_port = start_redis_server("redis-server", directory, "--save", "")
    started.append(primary)
    replica, replica_port = start_redis_server(
        "redis-server", directory, "--save", "", "--replicaof", "127.0.0.1", str(primary_port)
    )
    started.append(replica)
    with redis.Redis(port=replica_port, decode_responses=True) as node:
        if not wait_until(lambda: node.info("replication")["master_link_status"] == "up", 30):
            raise RuntimeError("the replica did not sync within 30 s")
    sentinel_port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 1\n"
    )
    sentinel = start_process(
        ["redis-sentinel", str(config)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(sentinel)
    with redis.Redis(port=sentinel_port, decode_responses=True) as sentinel:
        if not wait_until(lambda: _knows_replica(sentinel), 30):
            raise RuntimeError("the sentinel did not see the replica within 30 s")
    return started, sentinel_port


def _knows_replica(sentinel: redis.Redis) -> bool:
    try:
        return len(sentinel.sentinel_slaves(MASTER)) == 1
    except redis.RedisError:
        return False


def build_app(sentinel_port: int, wait_replicas: int):
    from initialize import create_app

    return create_app(
        {
            "APP_ENV": "development",
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}",
            "REDIS_URL": "redis://127.0.0.1/0",
            "REDIS_WAIT_REPLICAS": str(wait_replicas),
            "MAX_SESSIONS_PER_USER": "100000",
            "ALLOWLIST_CACHE_SECONDS": "0",
        }
    )


def sessions(app, count: int) -> list[str]:
    """``count`` sessions of kesa recorded directly (no password hash): their access tokens."""
    from utils.state import get_state

    with app.app_context():
        state = get_state()
        pairs = [state.tokens.issue_pair("kesa") for _ in range(count)]
        for pair in pairs:
            state.store.record_tokens(pair, max_sessions=100000)
    return [pair.access_token for pair in pairs]


def timed_logout(client, token: str) -> float:
    begun = time.perf_counter()
    response = client.post("/user/logout", headers={"Authorization": f"Bearer {token}"})
    elapsed = time.perf_counter() - begun
    if response.status_code != 200:
        raise RuntimeError(f"logout answered {response.status_code}: {response.get_json()}")
    return elapsed * 1e6


def summary(samples: list[float]) -> str:
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"median {statistics.median(samples):7.0f} µs, p90 {p90:7.0f} µs (n={len(samples)})"


def main() -> None:
    """Parse the options, then measure with the apps' log lines (one per logout) discarded."""
    report = sys.stdout
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        measure(report)


def measure(report) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logouts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    deadline = time.monotonic() + LIMIT_SECONDS
    with tempfile.TemporaryDirectory() as directory:
        started: list = []
        try:
            started, sentinel_port = start_group(Path(directory))
            apps = {"wait": build_app(sentinel_port, 1), "no wait": build_app(sentinel_port, 0)}
            clients = {name: app.test_client() for name, app in apps.items()}
            for name in apps:  # warm up: scripts loaded, connections made
                for token in sessions(apps[name], 20):
                    timed_logout(clients[name], token)
            totals: dict[str, list[float]] = {name: [] for name in apps}
            for round_number in range(1, options.rounds + 1):
                tokens = {name: sessions(app, options.logouts) for name, app in apps.items()}
                measured: dict[str, list[float]] = {name: [] for name in apps}
                for i in range(options.logouts):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"stopped at the {LIMIT_SECONDS:.0f} s limit")
                    order = ("wait", "no wait") if i % 2 == 0 else ("no wait", "wait")
                    for name in order:
                        measured[name].append(timed_logout(clients[name], tokens[name][i]))
                for name, samples in measured.items():
                    totals[name] += samples
                    print(f"round {round_number} {name:>7}: {summary(samples)}", file=report)
            for name, samples in totals.items():
                print(f"all rounds {name:>7}: {summary(samples)}", file=report)
            extra = statistics.median(totals["wait"]) - statistics.median(totals["no wait"])
            print(f"WAIT adds {extra:.0f} µs to the median logout", file=report)
        finally:
            for process in reversed(started):
                stop_process(process, 10)


if __name__ == "__main__":
    main()
