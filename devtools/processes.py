"""Process helpers shared by the local runner, the tests and bench/: free port, redis-server, stop.

Everything here is loopback only and bounded in time; processes are stopped by the handle this
code got when it started them, never looked up by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def redis_answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a Redis on host:port answers PING with PONG (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_process(argv: Sequence[str], **popen: object) -> subprocess.Popen:
    """Start ``argv`` in its own process group (a terminal's Ctrl-C reaches only its starter)."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(argv), process_group=0, **popen)  # noqa: S603


def start_redis_server(
    binary: str,
    directory: Path,
    *options: str,
    port: int | None = None,
    timeout: float = 10.0,
) -> tuple[subprocess.Popen, int]:
    """Start redis-server on 127.0.0.1 in ``directory`` and wait (bounded) for PONG.

    ``options`` go on its command line (a config file first, if any). Returns the process and
    its port; raises RuntimeError, with the process stopped, if it does not answer in time.
    """
    port = port or free_port()
    argv = [binary, *options, "--port", str(port), "--bind", LOOPBACK, "--dir", str(directory)]
    process = start_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answered = wait_until(lambda: process.poll() is not None or redis_answers(port), timeout)
    if answered and process.poll() is None:
        return process, port
    stop_process(process, 5)
    raise RuntimeError(f"redis-server did not answer on {LOOPBACK}:{port} within {timeout:g} s")


def stop_process(process: subprocess.Popen, timeout: float, *, group: bool = False) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL (its process group if it leads one).

    ``group``: SIGTERM goes to the process group it leads (as a terminal's signal would), not
    only to the process; the exit status either way.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group and os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(process.pid) == process.pid:
                    os.killpg(process.pid, signal.SIGKILL)
            process.kill()
    return process.wait(timeout=10)
