"""What a crash of a standalone Redis loses with AOF ``appendfsync everysec`` and ``always``.

    .venv/bin/python bench/aof_crash.py [--logouts N] [--trials T]

For each setting and trial: a private redis-server (free loopback port, temporary directory,
``--appendonly yes --appendfsync <setting>``); N sessions of kesa recorded through the store and
made durable on disk (``BGREWRITEAOF``, waited for); then a burst of N ``POST /user/logout``
through the app's test client, each answered 200, and at once ``kill -9`` of the redis-server;
then the same redis-server restarted on the same files, and the logged-out tokens counted that
the allowlist check accepts again ("came back"). Prints, per setting, what came back in each
trial. Bounded: N logouts (default 200), T trials (default 3), and a 120 s limit overall; every
redis-server is stopped by its handle in a ``finally``. (Under Sentinel or Cluster, see
docs/topologies.md: REDIS_WAIT_REPLICAS covers the loss of a primary instead.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from devtools.processes import start_redis_server  # noqa: E402
from devtools.processes import stop_process  # noqa: E402
from devtools.processes import wait_until  # noqa: E402

LIMIT_SECONDS = 120.0
SETTINGS = ("everysec", "always")


def build_app(port: int):
    from initialize import create_app

    return create_app(
        {
            "APP_ENV": "development",
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "MAX_SESSIONS_PER_USER": "100000",
            "ALLOWLIST_CACHE_SECONDS": "0",
        }
    )


def start(directory: Path, setting: str, port: int | None = None):
    options = ("--save", "", "--appendonly", "yes", "--appendfsync", setting)
    return start_redis_server("redis-server", directory, *options, port=port, timeout=30)


def on_disk(port: int) -> bool:
    """Rewrite the AOF and wait for it: what was written so far is then fsynced."""
    with redis.Redis(port=port, decode_responses=True) as node:
        node.bgrewriteaof()

        def rewritten() -> bool:
            persistence = node.info("persistence")
            return (
                not persistence["aof_rewrite_in_progress"]
                and not (persistence["aof_rewrite_scheduled"])
            )

        return wait_until(rewritten, 30)


def trial(setting: str, logouts: int) -> tuple[int, float]:
    """One crash: (logged-out tokens that came back, seconds the burst of logouts took)."""
    from utils.state import get_state

    with tempfile.TemporaryDirectory() as directory:
        process, port = start(Path(directory), setting)
        try:
            app = build_app(port)
            with app.app_context():
                state = get_state()
                pairs = [state.tokens.issue_pair("kesa") for _ in range(logouts)]
                for pair in pairs:
                    state.store.record_tokens(pair, max_sessions=100000)
            if not on_disk(port):
                raise RuntimeError("the AOF rewrite did not finish within 30 s")
            client = app.test_client()
            begun = time.monotonic()
            for pair in pairs:
                headers = {"Authorization": f"Bearer {pair.access_token}"}
                if client.post("/user/logout", headers=headers).status_code != 200:
                    raise RuntimeError("a logout was not answered 200")
            burst = time.monotonic() - begun
            process.kill()  # kill -9, right after the last 200
            process.wait(timeout=10)
            with app.app_context():
                get_state().store.close()
            process, _ = start(Path(directory), setting, port)
            app = build_app(port)
            with app.app_context():
                store = get_state().store
                came_back = sum(
                    store.is_token_active(p.username, p.session_id, p.access_jti) for p in pairs
                )
                store.close()
            return came_back, burst
        finally:
            stop_process(process, 10)


def main() -> None:
    """Parse the options, then crash Redis with the apps' log lines discarded."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logouts", type=int, default=200)
    parser.add_argument("--trials", type=int, default=3)
    options = parser.parse_args()
    report = sys.stdout
    deadline = time.monotonic() + LIMIT_SECONDS
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for setting in SETTINGS:
            results = []
            for _ in range(options.trials):
                if time.monotonic() > deadline:
                    raise SystemExit(f"stopped at the {LIMIT_SECONDS:.0f} s limit")
                results.append(trial(setting, options.logouts))
            back = ", ".join(f"{came_back}/{options.logouts}" for came_back, _ in results)
            bursts = ", ".join(f"{seconds * 1000:.0f} ms" for _, seconds in results)
            print(
                f"appendfsync {setting:>8}: logged-out tokens back after kill -9: {back} "
                f"(bursts took {bursts})",
                file=report,
            )


if __name__ == "__main__":
    main()
