"""The shipped "threads" worker (initialize/thread_worker.py) under gunicorn.conf.py, on the wire:
connections that send nothing, kept-alive and pipelined requests, a stop with a parked client."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import free_port
from devtools.processes import wait_until
from tests.test_server import GUNICORN
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop

# gunicorn.conf.py's keep-alive and gthread's wait for a new connection's first bytes.
KEEPALIVE_SECONDS = 5
FIRST_BYTES_SECONDS = 5
PING = b"GET /public/ping HTTP/1.1\r\nHost: x\r\n\r\n"


def one_worker(redis_server, tmp_path: Path, threads: int) -> Iterator[Served]:
    """gunicorn under gunicorn.conf.py, one worker of ``threads`` threads, on the private Redis."""
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=str(threads),
    )
    served = start(GUNICORN, env, tmp_path / "gunicorn.log")
    yield served
    stop(served)


@pytest.fixture
def one_thread(redis_server, tmp_path: Path) -> Iterator[Served]:
    """One worker with one thread: anything that held the thread would stall every client."""
    yield from one_worker(redis_server, tmp_path, threads=1)


@pytest.fixture
def two_threads(redis_server, tmp_path: Path) -> Iterator[Served]:
    """One worker with two threads: one serves, the other helps when a request is slow."""
    yield from one_worker(redis_server, tmp_path, threads=2)


def connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=10)


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` whole answers (each with a Content-Length) from a kept-alive socket."""
    buffer, answers = b"", []
    while len(answers) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1")
            length = int(
                next(
                    line.split(":", 1)[1]
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                )
            )
            end = head_end + 4 + length
            if len(buffer) >= end:
                answers.append(buffer[:end])
                buffer = buffer[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(answers)} answers"
        buffer += chunk
    assert buffer == b""
    return answers


def closed_by_server_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes (or resets) the connection within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_the_worker_in_use_is_the_shared_poll_one(one_thread):
    assert "Using worker: initialize.thread_worker.SharedPollJsonErrorWorker" in (
        one_thread.log.read_text()
    )


def test_a_silent_connection_holds_no_thread_and_is_closed_after_its_wait(one_thread):
    silent = connect(one_thread)
    with silent:
        started = time.monotonic()
        assert one_thread.request("/public/ping") == (200, b"pong")
        assert time.monotonic() - started < 2  # not after the silent client's wait
        assert closed_by_server_within(silent, FIRST_BYTES_SECONDS + 3)


def test_kept_alive_and_pipelined_requests_are_answered_in_order(one_thread):
    with connect(one_thread) as sock:
        sock.sendall(PING)
        assert read_answers(sock, 1)[0].endswith(b"pong")
        time.sleep(0.5)  # parked between requests, then woken by the next one
        welcome = b"GET /user/welcome HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(PING + welcome + PING)  # three at once: the second is a 401
        answers = read_answers(sock, 3)
        assert [answer.split(b" ", 2)[1] for answer in answers] == [b"200", b"401", b"200"]
        assert all(b"Connection: close" not in answer for answer in answers)
        # an idle kept-alive connection is closed once its keep-alive time is over
        assert closed_by_server_within(sock, KEEPALIVE_SECONDS + 3)


def test_a_client_that_leaves_is_forgotten(one_thread):
    for _ in range(20):  # connections closed before, after and between requests
        with connect(one_thread) as sock:
            sock.sendall(PING)
    assert one_thread.request("/public/ping") == (200, b"pong")


def test_a_stopping_worker_answers_a_parked_client_with_connection_close(one_thread):
    with connect(one_thread) as sock:
        sock.sendall(PING)
        read_answers(sock, 1)
        one_thread.process.terminate()  # graceful stop: the listener closes, parked clients linger
        time.sleep(0.5)
        sock.sendall(PING)
        answer = read_answers(sock, 1)[0]
        assert answer.split(b" ", 2)[1] == b"200"
        assert b"Connection: close" in answer
    assert wait_until(lambda: one_thread.process.poll() is not None, 10)
    assert one_thread.process.returncode == 0


def test_a_second_thread_serves_while_the_first_is_held_by_a_slow_request(two_threads):
    """A client that stops halfway through its body holds the thread serving it (the app reads
    the body as it comes); the other thread takes over until it is done."""
    body = b"username=kesa&password=wrong-password"
    with connect(two_threads) as slow:
        slow.sendall(
            b"POST /public/login HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
        )
        time.sleep(0.5)  # the slow request is being read by then: nothing to wait on from here
        started = time.monotonic()
        for _ in range(5):
            assert two_threads.request("/public/ping") == (200, b"pong")
        assert time.monotonic() - started < 2
        slow.sendall(body[10:])  # the slow request ends and is answered too
        assert read_answers(slow, 1)[0].split(b" ", 2)[1] == b"401"


def test_a_silent_or_trickling_client_holds_no_thread_even_with_one(one_thread):
    """Request heads are read as they come, between other clients' requests."""
    with connect(one_thread) as silent, connect(one_thread) as trickling:
        trickling.sendall(b"GET /public/ping HTTP/1.1\r\nHost: x\r\n")  # no blank line yet
        started = time.monotonic()
        for _ in range(5):
            assert one_thread.request("/public/ping") == (200, b"pong")
        assert time.monotonic() - started < 2
        trickling.sendall(b"\r\n")
        assert read_answers(trickling, 1)[0].endswith(b"pong")
        silent.sendall(PING)
        assert read_answers(silent, 1)[0].endswith(b"pong")
