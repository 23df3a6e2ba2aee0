"""What ``GET /admin/users`` and the other admin operations cost with many accounts.

    .venv/bin/python bench/admin_accounts.py [--accounts N] [--other-keys K] [--pages P]

A private redis-server (free loopback port, temporary directory, no persistence) gets N accounts
(default 100,000) written directly with a pipeline (a hash with a placeholder hash: Argon2 would
take minutes, and listing never reads it), plus K other keys per account (default 0; e.g. 4 for
sessions, tokens and counters, which SCAN must step over). Then, through the app's test client
with an admin client: the first P pages of ``limit=1000`` (default 20) each timed, the whole
listing followed to its end (time, pages, names, and that every name came once), and a delete and
an unlock of one account (the standalone sweep SCANs the whole keyspace). Prints one line per
figure. Bounded: the listing stops after N/1000 + 100 pages, and the run after 300 s; the
redis-server is stopped by its handle in a ``finally``.
"""

from __future__ import annotations

import argparse
import base64
import statistics
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

LIMIT_SECONDS = 300.0
ADMIN = "bench:bench-admin-secret-0123"
HEADERS = {"Authorization": "Basic " + base64.b64encode(ADMIN.encode()).decode()}
PIPELINE_BATCH = 10_000


def fill(port: int, accounts: int, other_keys: int) -> None:
    """N account hashes (and K expiring keys each) in pipelined batches."""
    with redis.Redis(port=port) as node:
        pipe = node.pipeline(transaction=False)
        for number in range(accounts):
            name = f"member-{number:06d}"
            pipe.hset(f"jwt:{{{name}}}:user", mapping={"password": "x", "created": 1})
            for other in range(other_keys):
                pipe.set(f"jwt:{{{name}}}:token:{other}", name, ex=3600)
            if number % PIPELINE_BATCH == PIPELINE_BATCH - 1:
                pipe.execute()
        pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--other-keys", type=int, default=0)
    parser.add_argument("--pages", type=int, default=20)
    options = parser.parse_args()
    deadline = time.monotonic() + LIMIT_SECONDS
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_redis_server(
            "redis-server", Path(directory), "--save", "", "--appendonly", "no"
        )
        try:
            begun = time.perf_counter()
            fill(port, options.accounts, options.other_keys)
            with redis.Redis(port=port) as node:
                keys = node.dbsize()
            print(
                f"filled: {options.accounts} accounts, {keys} keys "
                f"in {time.perf_counter() - begun:.1f} s"
            )
            from initialize import create_app

            app = create_app(
                {
                    "APP_ENV": "development",
                    "DEMO_USERS": "",
                    "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                    "ADMIN_CLIENTS": ADMIN,
                    "LOG_FORMAT": "json",
                }
            )
            client = app.test_client()
            page_seconds, cursor = [], ""
            for _ in range(options.pages):
                started = time.perf_counter()
                answer = client.get(f"/admin/users?limit=1000&cursor={cursor}", headers=HEADERS)
                page_seconds.append(time.perf_counter() - started)
                body = answer.get_json()
                assert answer.status_code == 200 and len(body["users"]) <= 1000, body
                cursor = body["next"] or ""
                if not cursor:
                    break
            print(
                f"page of limit=1000 over HTTP (test client): median "
                f"{statistics.median(page_seconds) * 1000:.1f} ms, max "
                f"{max(page_seconds) * 1000:.1f} ms over {len(page_seconds)} pages"
            )

            names: list[str] = []
            cursor, pages = "", 0
            started = time.perf_counter()
            while pages < options.accounts // 1000 + 100 and time.monotonic() < deadline:
                body = client.get(f"/admin/users?limit=1000&cursor={cursor}", headers=HEADERS)
                body = body.get_json()
                names += body["users"]
                pages += 1
                cursor = body["next"]
                if cursor is None:
                    break
            whole = time.perf_counter() - started
            complete = cursor is None and len(set(names)) == options.accounts
            print(
                f"whole listing: {len(names)} names ({len(set(names))} distinct) in {pages} "
                f"pages, {whole:.2f} s; complete: {complete}"
            )

            for path, method in (
                ("/admin/users/member-000001/unlock", "POST"),
                ("/admin/users/member-000002", "DELETE"),
            ):
                started = time.perf_counter()
                answer = client.open(path, method=method, headers=HEADERS)
                assert answer.status_code == 200, answer.get_json()
                print(f"{method} {path}: {(time.perf_counter() - started) * 1000:.0f} ms")
            with app.app_context():
                from utils.state import get_store

                get_store().close()
        finally:
            stop_process(process, 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
