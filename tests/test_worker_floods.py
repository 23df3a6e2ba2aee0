"""Connection floods against a real gunicorn on loopback (the "Connection floods" rules of
docs/worker.md): descriptor exhaustion, idle and trickling clients beyond the threads,
worker_connections, CLIENT_HEADER_TIMEOUT, a serving thread that raises or dies, max_requests
with parked keep-alive clients, and the TLS rule, for each worker class where they apply."""

from __future__ import annotations

import datetime
import ipaddress
import resource
import socket
import ssl
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.processes import free_port
from devtools.processes import start_process
from devtools.processes import stop_process
from devtools.processes import wait_until
from tests.faulty_workers import SECRET_IN_MESSAGE
from tests.test_server import GUNICORN
from tests.test_server import ROOT
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop
from tests.test_thread_worker import PING
from tests.test_thread_worker import closed_by_server_within
from tests.test_thread_worker import read_answers

RECOVERY_SECONDS = 10  # "within 10 s of the flood ending every worker serves again"
WORKER_CLASSES = ("threads", "gthread", "sync")
THREADS = {"threads": 2, "gthread": 2, "sync": 1}  # sync with threads is gthread


def one_worker_env(redis_server, worker_class: str, threads: int, **extra: str) -> dict[str, str]:
    """gunicorn.conf.py's environment for one worker of ``worker_class`` on the private Redis."""
    return server_env(
        APP_ENV="development",
        REDIS_URL=redis_server.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        GUNICORN_WORKER_CLASS=worker_class,
        GUNICORN_THREADS=str(threads),
        **extra,
    )


def serve(redis_server, tmp_path: Path, worker_class: str, threads: int = 2, **extra: str):
    env = one_worker_env(redis_server, worker_class, threads, **extra)
    return start(GUNICORN, env, tmp_path / "gunicorn.log")


def connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=10)


def pings(served: Served) -> bool:
    try:
        return served.request("/public/ping") == (200, b"pong")
    except OSError:
        return False


def only_worker(served: Served) -> int:
    (pid,) = served.worker_pids()
    return pid


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_flood_beyond_the_file_descriptors_leaves_a_worker_that_serves_again(
    redis_server, tmp_path, worker_class
):
    served = serve(redis_server, tmp_path, worker_class, threads=THREADS[worker_class])
    try:
        worker = only_worker(served)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (96, 96))  # lowered from outside
        with ExitStack() as flood:
            for _ in range(384):
                flood.enter_context(connect(served))
            if worker_class == "threads":  # ours says so, once per episode
                assert wait_until(lambda: "accept failed (EMFILE)" in served.log.read_text(), 10)
            time.sleep(3)  # the scenario: the flood is held 3 s, then closed
        flood_ended = time.monotonic()
        assert wait_until(lambda: pings(served), RECOVERY_SECONDS), served.log.read_text()
        assert time.monotonic() - flood_ended < RECOVERY_SECONDS
        for _ in range(10):
            assert pings(served)
        if worker_class == "threads":  # ours backs off and goes on; gthread's is replaced
            assert served.worker_pids() == {worker}
    finally:
        stop(served)


def test_the_threads_worker_serves_during_a_descriptor_flood(redis_server, tmp_path):
    """Ours gives the oldest idle connection's descriptor back: others are served meanwhile."""
    served = serve(redis_server, tmp_path, "threads")
    try:
        resource.prlimit(only_worker(served), resource.RLIMIT_NOFILE, (96, 96))
        with ExitStack() as flood:
            for _ in range(384):
                flood.enter_context(connect(served))
            assert wait_until(lambda: "accept failed (EMFILE)" in served.log.read_text(), 10)
            started = time.monotonic()
            assert wait_until(lambda: pings(served), 5)
            assert time.monotonic() - started < 5
    finally:
        stop(served)


def test_idle_and_trickling_clients_beyond_the_threads_hold_none(redis_server, tmp_path):
    served = serve(redis_server, tmp_path, "threads")
    try:
        with ExitStack() as flood:
            for n in range(100):
                client = flood.enter_context(connect(served))
                if n % 2:  # half say nothing, half start a request head and stop
                    client.sendall(b"GET /public/ping HTTP/1.1\r\nHost: x\r\n")
            assert wait_until(lambda: pings(served), 2)
            for _ in range(20):
                started = time.monotonic()
                assert pings(served)
                assert time.monotonic() - started < 1
    finally:
        stop(served)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_after_an_idle_and_trickling_flood_every_worker_serves_again(
    redis_server, tmp_path, worker_class
):
    served = serve(redis_server, tmp_path, worker_class, threads=THREADS[worker_class])
    try:
        with ExitStack() as flood:
            for n in range(200):
                client = flood.enter_context(connect(served))
                if n % 2:  # a head that never ends, and a body that never comes
                    client.sendall(b"POST /public/login HTTP/1.1\r\nHost: x\r\n")
                    client.sendall(b"Content-Length: 99\r\n\r\nusername=")
        assert wait_until(lambda: pings(served), RECOVERY_SECONDS)
    finally:
        stop(served)


def test_a_client_trickling_its_head_is_closed_after_client_header_timeout(redis_server, tmp_path):
    served = serve(redis_server, tmp_path, "threads", CLIENT_HEADER_TIMEOUT="2")
    try:
        with connect(served) as slow:
            started = time.monotonic()
            closed = False
            for byte in b"GET /public/ping HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaa\r\n":
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                if closed_by_server_within(slow, 0.2):
                    closed = True
                    break
            assert closed
            assert 1.5 < time.monotonic() - started < 4.5
        with connect(served) as kept_alive:  # the next head of a kept-alive connection too
            kept_alive.sendall(PING)
            read_answers(kept_alive, 1)
            kept_alive.sendall(b"GET /public/ping HTTP/1.1\r\n")
            started = time.monotonic()
            assert closed_by_server_within(kept_alive, 5)
            assert 1.5 < time.monotonic() - started < 4.5
        assert pings(served)
    finally:
        stop(served)


def test_worker_connections_is_honoured_by_closing_the_oldest_idle_ones(redis_server, tmp_path):
    served = serve(redis_server, tmp_path, "threads", GUNICORN_CMD_ARGS="--worker-connections 20")
    try:
        with ExitStack() as flood:
            idle = [flood.enter_context(connect(served)) for _ in range(50)]
            assert wait_until(lambda: pings(served), 5)

            def closed_count() -> int:
                return sum(closed_by_server_within(sock, 0.01) for sock in idle)

            assert wait_until(lambda: closed_count() >= 30, 3)  # first-bytes wait is 5 s
    finally:
        stop(served)


@pytest.mark.parametrize(
    ("worker", "logged"),
    [
        ("tests.faulty_workers.RaisesOnceInLoop", "Error in a serving thread; it goes on"),
        (
            "tests.faulty_workers.KillsAThread",
            "A serving thread died: the worker exits, gunicorn replaces it",
        ),
    ],
    ids=["raises", "dies"],
)
def test_a_serving_thread_that_raises_is_logged_scrubbed_and_never_leaves_a_dead_worker(
    redis_server, tmp_path, worker, logged
):
    served = serve(
        redis_server,
        tmp_path,
        "threads",
        threads=1,
        GUNICORN_CMD_ARGS=f"--worker-class {worker}",
        FAULT_MARKER=str(tmp_path / "fault-raised"),
    )
    try:
        assert wait_until(lambda: logged in served.log.read_text(), 10)
        for _ in range(10):
            assert wait_until(lambda: pings(served), RECOVERY_SECONDS)
        log = served.log.read_text()
        assert "Traceback" in log
        assert SECRET_IN_MESSAGE not in log  # the message is withheld, the frames are kept
    finally:
        stop(served)


@pytest.mark.parametrize("worker_class", ["threads", "gthread"])
def test_after_max_requests_a_parked_client_is_answered_with_connection_close(
    redis_server, tmp_path, worker_class
):
    served = serve(redis_server, tmp_path, worker_class, GUNICORN_CMD_ARGS="--max-requests 3")
    try:
        first = only_worker(served)
        with connect(served) as parked:
            parked.sendall(PING)
            read_answers(parked, 1)  # parked between requests from now on
            for _ in range(5):  # until the request that reaches max_requests (after health checks)
                with connect(served) as other:
                    other.sendall(PING)
                    if b"Connection: close" in read_answers(other, 1)[0]:
                        break
            else:
                pytest.fail("no answer said the worker restarts")
            parked.sendall(PING)  # arrives while the worker lingers
            answer = read_answers(parked, 1)[0]
            assert answer.split(b" ", 2)[1] == b"200"
            assert b"Connection: close" in answer
        assert wait_until(lambda: served.worker_pids() not in (set(), {first}), 10)
        assert wait_until(lambda: pings(served), RECOVERY_SECONDS)
    finally:
        stop(served)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_on_the_threads_worker_is_refused_at_start_up_with_one_line(certificate):
    cert_file, key_file = certificate
    env = server_env(
        APP_ENV="development",
        PORT=str(free_port()),
        GUNICORN_WORKER_CLASS="threads",
        GUNICORN_CMD_ARGS=f"--certfile {cert_file} --keyfile {key_file}",
    )
    result = subprocess.run(GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "GUNICORN_WORKER_CLASS=threads does not serve TLS (certfile is set)" in lines[0]


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_tls_is_served_on_gunicorns_worker_classes_kept_alive_too(
    redis_server, tmp_path, certificate, worker_class
):
    cert_file, key_file = certificate
    env = one_worker_env(
        redis_server,
        worker_class,
        threads=2 if worker_class == "gthread" else 1,
        GUNICORN_CMD_ARGS=f"--certfile {cert_file} --keyfile {key_file}",
    )
    port = int(env["PORT"])
    with (tmp_path / "gunicorn.log").open("wb") as sink:
        process = start_process(GUNICORN, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: accepts_connections(port), 30)
        context = ssl.create_default_context(cafile=str(cert_file))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            for _ in range(3 if worker_class == "gthread" else 1):  # sync closes each one
                tls.sendall(PING)
                assert read_answers(tls, 1)[0].endswith(b"pong")
    finally:
        stop_process(process, 30, group=True)


def accepts_connections(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
