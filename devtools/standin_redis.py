"""Embedded, in-memory Redis stand-in for `./run.sh --local` when no Redis is available.

    python -m devtools.standin_redis --port N [--port-file PATH]

Serves fakeredis's TCP server on 127.0.0.1 only (never another address). Nothing it holds is
written anywhere: every user, session and token is lost when it stops. It is a convenience for
trying the service on a machine without redis-server, never a deployment.

`--port 0` lets the kernel pick a free port; `--port-file` receives the port actually bound
once the server accepts connections (devtools/local.py reads it). SIGTERM / SIGINT stop it
cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

HOST = "127.0.0.1"  # loopback only, on purpose: this stand-in has no auth and no persistence

WARNING = """\
###########################################################################
#  WARNING: using an EMBEDDED IN-MEMORY Redis stand-in (fakeredis).       #
#  NOTHING PERSISTS: users, sessions and tokens vanish when it stops.     #
#  Install redis-server (apt-get install redis-server) or set REDIS_URL   #
#  for a real, persistent Redis.                                          #
###########################################################################"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.standin_redis",
        description="In-memory Redis stand-in (fakeredis) on 127.0.0.1; nothing persists.",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)"
    )
    parser.add_argument(
        "--port-file", default=None, help="write the bound port here once listening"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        print(
            "standin_redis: fakeredis is not installed (pip install 'fakeredis[lua]')",
            file=sys.stderr,
        )
        return 1

    try:
        server = TcpFakeServer((HOST, args.port), server_type="redis")
    except OSError as exc:
        print(
            f"standin_redis: cannot listen on {HOST}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    server.daemon_threads = True
    port = server.server_address[1]

    def _stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever to return: call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    print(WARNING, file=sys.stderr)
    print(
        f"standin_redis: listening on {HOST}:{port} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, args.port_file)

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("standin_redis: stopped (its data is gone)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
