"""Hostile input: oversized and malformed tokens, odd login fields, and property-based fuzzes.

Each case gets SPEC's status and never a 5xx; the app-level fuzz also checks that Redis is
unchanged, and the wire-level tests (raw HTTP/1.1 to a real gunicorn: broken framing, nesting,
oversized bodies, a framing fuzz) that the log stays clean. (Forged signatures, alg none, key
confusion and CSRF live in test_jwt, test_keys and test_token_lookup; tokens in the access log
in test_server.)
"""

from __future__ import annotations

import json
import re
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest
from gunicorn.config import Config
from gunicorn.http.errors import ForbiddenProxyRequest
from gunicorn.http.errors import InvalidChunkSize
from gunicorn.http.errors import InvalidRequestLine
from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.http.errors import LimitRequestLine
from gunicorn.http.errors import UnsupportedTransferCoding
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from devtools.processes import free_port
from initialize import create_app
from initialize.config import WORKER_CLASSES
from initialize.gunicorn_hooks import WORKER_CLASSES as GUNICORN_WORKERS
from initialize.gunicorn_hooks import ScrubbingLogger
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions
from tests.conftest import RedisServer
from tests.conftest import start_redis_server
from tests.test_server import GUNICORN
from tests.test_server import Served
from tests.test_server import server_env
from tests.test_server import start
from tests.test_server import stop

BEARER = AuthActions.bearer


@pytest.mark.parametrize("size", [10_000, 100_000])
@pytest.mark.parametrize("place", ["header", "query", "cookie", "form"])
def test_oversized_tokens_are_401(client, size, place):
    token = "eyJ" + "a" * size
    if place == "header":
        response = client.get("/user/welcome", headers=BEARER(token))
    elif place == "query":
        response = client.get(f"/user/welcome?token={token}")
    elif place == "cookie":
        response = client.get("/user/welcome", headers={"Cookie": f"jwt={token}"})
    else:
        response = client.post("/user/publish", data={"token": token, "title": "t"})
    assert response.status_code == 401
    assert response.get_json()["code"] == 401


@pytest.mark.parametrize(
    "body",
    [
        {"username": "kēsa", "password": "123"},
        {"username": "kesa\u0000", "password": "123"},
        {"username": "x" * 10_000, "password": "123"},
        {"username": "kesa", "password": "p" * 10_000},
        {"username": None, "password": "123"},
        {"username": ["kesa"], "password": "123"},
        {"username": {"$ne": ""}, "password": "123"},
        {"username": "kesa", "password": 123},
        {"username": "kesa", "password": True},
        {"username": "kesa"},
    ],
)
@pytest.mark.parametrize("route", ["/public/login", "/public/register"])
def test_odd_login_fields_are_400_and_change_nothing(client, redis_client, route, body):
    before = sorted(redis_client.keys("*"))
    response = client.post(route, json=body)
    assert response.status_code == 400
    assert sorted(redis_client.keys("*")) == before


def test_unicode_passwords_work(client, auth):
    fields = {"username": "unicode_user", "password": "密码-пароль-🔑"}
    assert client.post("/public/register", json=fields).status_code == 201
    assert auth.login(**fields)["tokenType"] == "Bearer"


def test_unknown_user_and_wrong_password_cost_one_hash_each(client, monkeypatch):
    import utils.passwords as passwords

    calls = []
    real_hasher = passwords._HASHER

    class CountingHasher:
        def verify(self, hash_, password):
            calls.append(hash_)
            return real_hasher.verify(hash_, password)

    monkeypatch.setattr(passwords, "_HASHER", CountingHasher())
    wrong = client.post("/public/login", data={"username": "kesa", "password": "bad"})
    unknown = client.post("/public/login", data={"username": "nobody", "password": "bad"})
    assert wrong.get_json() == unknown.get_json()
    assert len(calls) == 2
    assert calls[1] == passwords._DUMMY_HASH  # the same Argon2id work for a missing user
    assert calls[0].split("$")[3] == calls[1].split("$")[3]  # same m, t, p parameters


# ------------------------------------------------------------------ property-based fuzzing

PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
SEGMENT = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"),
    max_size=80,
)
TOKENS = st.one_of(
    PRINTABLE,
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", SEGMENT, SEGMENT, SEGMENT),
    st.builds(lambda b, c: f"eyJhbGciOiJIUzI1NiJ9.{b}.{c}", SEGMENT, SEGMENT),
    st.builds(lambda b: f"eyJhbGciOiJub25lIn0.{b}.", SEGMENT),
)
ROUTES = st.sampled_from(
    [
        ("GET", "/user/welcome"),
        ("GET", "/public/feed"),
        ("GET", "/public/refresh"),
        ("POST", "/public/refresh"),
        ("POST", "/user/logout"),
        ("POST", "/user/logout-all"),
        ("POST", "/user/publish"),
    ]
)


def snapshot(client: fakeredis.FakeRedis) -> dict:
    state = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == "string":
            state[key] = client.get(key)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = kind
    return state


@pytest.fixture(scope="module")
def fuzz_target():
    redis_client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    app = create_app(DEV_ENV, redis_client=redis_client)
    client = app.test_client()
    tokens = AuthActions(client).login()  # a live session the fuzz must not disturb
    return app, redis_client, tokens


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=ROUTES,
    token=TOKENS,
    place=st.sampled_from(["header", "raw-authorization", "query", "cookie", "form", "all"]),
    csrf=st.one_of(st.none(), PRINTABLE),
    form=st.dictionaries(PRINTABLE, PRINTABLE, max_size=4),
)
def test_arbitrary_tokens_and_bodies_never_5xx_and_never_change_redis(
    fuzz_target, route, token, place, csrf, form
):
    app, redis_client, tokens = fuzz_target
    client = app.test_client()
    before = snapshot(redis_client)
    method, path = route
    headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
    query = {}
    data = dict(form) if method == "POST" else None
    if place in ("header", "all"):
        headers["Authorization"] = f"Bearer {token}"
    if place == "raw-authorization":
        headers["Authorization"] = token
    if place in ("query", "all"):
        query["token"] = token
    if place in ("cookie", "all"):
        client.set_cookie("jwt", token)
        client.set_cookie("jwt_refresh", token)
    if place in ("form", "all") and data is not None:
        data["token"] = token
    response = client.open(path, method=method, headers=headers, query_string=query, data=data)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json or response.status_code == 200
    if path != "/public/feed" or response.status_code != 200:
        assert response.status_code in (401, 403, 400, 413), response.get_json()
    assert snapshot(redis_client) == before
    # the real session is untouched
    welcome = client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
    assert welcome.status_code == 200


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.dictionaries(PRINTABLE, PRINTABLE, max_size=4), PRINTABLE))
def test_arbitrary_login_and_register_bodies_never_5xx(fuzz_target, body):
    app, _, _ = fuzz_target
    client = app.test_client()
    for path in ("/public/login", "/public/register"):
        if isinstance(body, dict):
            response = client.post(path, data=body)
        else:
            response = client.post(path, data=body, content_type=JSON)
        assert response.status_code < 500
        assert response.is_json


# ------------------------------------------------------------------ on the wire: real gunicorn
#
# What reaches the app is only half of it: gunicorn decodes the framing (chunked coding,
# trailers) while the app reads, and reads what the app left unread after the answer. These
# tests speak raw HTTP/1.1 to a real gunicorn, both worker classes, and read its whole log.

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
SECRET_PASSWORD = "Hunter2-never-in-a-log"
STATUS_LINE = re.compile(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ")
WIRE_LIMIT = 1024 * 1024  # MAX_CONTENT_LENGTH of these servers: over-limit bodies stay cheap


@dataclass
class Answer:
    raw: bytes

    @property
    def statuses(self) -> list[int]:
        """Every response on the connection (a framing error must not add a second one)."""
        return [int(status) for status in STATUS_LINE.findall(self.raw)]

    @property
    def json(self) -> dict:
        return json.loads(self.raw.partition(b"\r\n\r\n")[2].split(b"\r\n")[0])


def exchange(served: Served, payload: bytes | Iterator[bytes]) -> Answer:
    """Send raw bytes (or pieces, until the server stops reading), half-close, read it all."""
    pieces = [payload] if isinstance(payload, bytes) else payload
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and stopped reading: what it said is below
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return Answer(b"".join(chunks))


def post(path: str, body: bytes, content_type: str = FORM, **headers: str) -> bytes:
    """A POST with a Content-Length, in raw bytes."""
    return request_head("POST", path, content_type, **headers) + (
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def chunked(path: str, body: bytes, content_type: str = FORM, **headers: str) -> bytes:
    """A POST whose framing is ``body`` as given (the caller writes the chunks)."""
    return (
        request_head("POST", path, content_type, **headers)
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + body
    )


def request_head(method: str, path: str, content_type: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def endless_chunks(size: int = 64 * 1024, total: int = 200 * 1024 * 1024) -> Iterator[bytes]:
    """A chunked body of ``total`` bytes, sent piecewise so the server can stop reading it."""
    yield chunked("/public/login", b"")
    for _ in range(total // size):
        yield chunk(b"username=kesa&password=" + b"a" * (size - 23))
    yield b"0\r\n\r\n"


def wire_server(directory: Path, worker_class: str, **settings: str) -> tuple[Served, RedisServer]:
    redis = start_redis_server(directory)
    env = server_env(
        APP_ENV="development",
        REDIS_URL=redis.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        GUNICORN_WORKER_CLASS=worker_class,
        MAX_CONTENT_LENGTH=str(WIRE_LIMIT),
        **settings,
    )
    return start(GUNICORN, env, directory / "gunicorn.log"), redis


def stop_wire_server(served: Served, redis: RedisServer) -> None:
    stop(served)
    redis.stop()


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def wire(request, tmp_path_factory) -> Iterator[Served]:
    """One gunicorn per worker class with a private Redis, for this module's wire tests."""
    served, redis = wire_server(tmp_path_factory.mktemp(request.param), request.param)
    yield served
    stop_wire_server(served, redis)


def assert_clean_log(served: Served, *secrets: str, server_errors: bool = False) -> None:
    """No traceback, no error line, no 5xx (unless ``server_errors``: Redis was stopped), and
    none of ``secrets`` anywhere in the log."""
    log = served.flushed_log()
    assert "Traceback" not in log
    assert "[ERROR]" not in log and "ERROR in" not in log
    assert server_errors or not re.search(r'HTTP/1\.[01]" 5\d\d ', log), log
    for secret in (SECRET_PASSWORD, *secrets):
        assert secret not in log


@pytest.fixture
def error_log(tmp_path) -> Iterator[ScrubbingLogger]:
    """gunicorn's logger as the service sets it up, its error log in ``tmp_path/error.log``."""
    config = Config()
    config.set("errorlog", str(tmp_path / "error.log"))
    config.set("worker_tmp_dir", str(tmp_path))
    log = ScrubbingLogger(config)
    yield log
    for handler in log.error_log.handlers:
        handler.close()


def test_gunicorns_error_log_keeps_no_quoted_request_bytes_and_no_exception_message(
    tmp_path, error_log
):
    log = error_log
    log.warning(f"Invalid request from ip=1.2.3.4: Invalid chunk size: {SECRET_PASSWORD!r}")
    log.warning(f"Invalid request from ip=1.2.3.4: Invalid HTTP method: {SECRET_PASSWORD!r}")
    both_quotes = SECRET_PASSWORD.encode() + b"'\""  # repr() escapes one kind of quote
    log.warning(f"Invalid HTTP Header: {both_quotes!r}")
    try:
        raise InvalidChunkSize(SECRET_PASSWORD.encode())
    except InvalidChunkSize:
        log.exception("Error handling request /public/login")
    text = (tmp_path / "error.log").read_text()
    assert SECRET_PASSWORD not in text
    assert "Invalid chunk size: [redacted]" in text
    assert "gunicorn.http.errors.InvalidChunkSize (message withheld)" in text
    assert __file__ in text  # the frames stay: they are code, not request data


def gunicorn_answer(worker_class: type, exc: BaseException, log: ScrubbingLogger) -> bytes:
    """What a worker of ``worker_class`` sends a client when ``handle_error`` meets ``exc``."""
    worker = worker_class(0, 0, [], None, 30, log.cfg, log)
    server, client = socket.socketpair()
    with server, client:
        worker.handle_error(None, server, ("1.2.3.4", 1234), exc)
        server.close()
        worker.tmp.close()
        return client.recv(65536)


@pytest.mark.parametrize("setting", WORKER_CLASSES)
@pytest.mark.parametrize(
    "exc",
    [
        InvalidRequestLine(f"GET /?token={SECRET_PASSWORD}"),
        LimitRequestLine(9000, 8190),
        LimitRequestHeaders("Request Header Fields Too Large"),
        UnsupportedTransferCoding(SECRET_PASSWORD),
        ForbiddenProxyRequest("1.2.3.4"),
        InvalidChunkSize(SECRET_PASSWORD.encode()),
        ValueError(SECRET_PASSWORD),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_gunicorns_own_answers_keep_its_status_line_with_a_json_body(
    tmp_path, error_log, setting, exc
):
    """Each worker class of the setting answers as gunicorn's own would, with JSON for HTML."""
    error_log.cfg.set("worker_class", GUNICORN_WORKERS[setting])  # loaded as gunicorn does
    ours = error_log.cfg.worker_class
    stock = {"sync": SyncWorker, "gthread": ThreadWorker, "threads": ThreadWorker}[setting]
    assert issubclass(ours, stock)
    theirs = gunicorn_answer(stock, exc, error_log)
    answer = gunicorn_answer(ours, exc, error_log)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == theirs.partition(b"\r\n")[0]
    head, _, body = rest.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"Connection: close",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    code, reason = status_line.split(b" ", 2)[1:]
    assert json.loads(body) == {"code": int(code), "message": f"{reason.decode()}."}
    assert SECRET_PASSWORD.encode() not in answer
    assert SECRET_PASSWORD not in (tmp_path / "error.log").read_text()


def test_every_worker_class_setting_has_a_json_worker():
    assert set(GUNICORN_WORKERS) == set(WORKER_CLASSES)


NESTED = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    "payload,status",
    [
        (post("/public/login", NESTED, JSON), 400),
        (post("/public/register", NESTED, JSON), 400),
        (chunked("/public/login", f"username=kesa&password={SECRET_PASSWORD}\r\n".encode()), 400),
        (chunked("/public/login", f"zz\r\nusername=kesa&password={SECRET_PASSWORD}".encode()), 400),
        (chunked("/public/login", chunk(b"username=kesa&") + b"password=x\r\n0\r\n\r\n"), 400),
        (chunked("/public/login", b"3\r\n" + SECRET_PASSWORD.encode() + b"\r\n0\r\n\r\n"), 400),
        (chunked("/public/register", b"5;\x00bad\r\nhello\r\n0\r\n\r\n"), 400),
        (chunked("/public/login", chunk(b"username=kesa&password=123") + b"0\r\nX: \xff\r\n"), 400),
        (chunked("/public/login", chunk(b"password=" + b"a" * WIRE_LIMIT) + b"0\r\n\r\n"), 413),
        (endless_chunks, 413),  # a generator function: each run sends it anew
        (post("/public/login", b"username=kesa&password=" + b"a" * WIRE_LIMIT), 413),
    ],
    ids=[
        "nested json login",
        "nested json register",
        "body as chunk size",
        "non-hex chunk size",
        "data outside a chunk",
        "chunk longer than announced",
        "bad chunk extension",
        "truncated trailers",
        "chunked over the limit",
        "200 MiB chunked",
        "content-length over the limit",
    ],
)
def test_malformed_or_oversized_bodies_get_json_4xx_and_leave_the_log_clean(wire, payload, status):
    workers = wire.worker_pids()
    answer = exchange(wire, payload if isinstance(payload, bytes) else payload())
    assert answer.statuses == [status], answer.raw[:500]
    assert answer.json["code"] == status
    assert wire.request("/healthz")[0] == 200
    assert wire.worker_pids() == workers  # no worker died on it
    assert_clean_log(wire)


def test_a_refresh_token_in_a_malformed_body_is_neither_logged_nor_spent(wire):
    tokens = wire.login()
    form = f"token={tokens['refreshToken']}".encode()
    for body in (form + b"\r\n", chunk(form)[:-2] + b"XX", b"5\r\n" + form + b"\r\n0\r\n\r\n"):
        assert exchange(wire, chunked("/public/refresh", body)).statuses == [400]
    assert_clean_log(wire, tokens["refreshToken"], *tokens["refreshToken"].split(".")[1:])
    status, body = wire.request("/public/refresh", {"token": tokens["refreshToken"]})
    assert status == 200, body  # the token was never read as presented: still good for one use


def test_an_unread_malformed_body_ends_the_connection_after_the_routes_answer(wire):
    """The answer stands (the route never needed the body), and gunicorn adds nothing to it."""
    for path in ("/public/ping", "/nowhere"):
        payload = request_head("GET", path, FORM) + b"Transfer-Encoding: chunked\r\n\r\n"
        answer = exchange(wire, payload + f"{SECRET_PASSWORD}\r\n".encode())
        assert answer.statuses == [200 if path == "/public/ping" else 404]
    assert_clean_log(wire)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_tokens_and_passwords_never_reach_the_log_on_any_failing_path(tmp_path, worker_class):
    """Every way a request can fail, fed a password and live tokens; then the whole log."""
    served, redis = wire_server(tmp_path, worker_class, LOGIN_MAX_FAILURES="2")
    try:
        tokens = served.login()
        access, refresh = tokens["accessToken"], tokens["refreshToken"]
        secrets = [access, refresh, *access.split(".")[1:], *refresh.split(".")[1:]]
        password = SECRET_PASSWORD
        form = f"username=kesa&password={password}".encode()
        eve = b"username=eve&" + form.partition(b"&")[2]
        bearer = {"Authorization": f"Bearer {access}"}
        pad = b"&pad=" + b"a" * WIRE_LIMIT
        assert exchange(served, post("/public/register", eve)).statuses == [201]
        failing = [
            # credentials refused: wrong password, then locked, a taken name, bad new ones
            post("/public/login", form),
            post("/public/login", form),
            post("/public/login", form),
            post("/public/register", eve),
            post("/public/register", f"username={password}!&password=short".encode()),
            post("/public/register", json.dumps({"username": password}).encode(), JSON),
            post("/public/login", b'{"username": "kesa", "password": "' + password.encode(), JSON),
            post("/public/login", b"[" * 5000 + password.encode(), JSON),
            # broken framing around the password and the tokens
            chunked("/public/login", form + b"\r\n"),
            chunked("/public/login", chunk(form)[:-2] + refresh.encode()),
            chunked("/public/refresh", f"token={refresh}\r\n".encode()),
            chunked("/public/refresh", f"0\r\nX-T: {access}\r\n{password}\r\n\r\n".encode()),
            chunked("/user/publish", f"token={access}; ext\r\n".encode()),
            chunked("/public/login", chunk(form + pad) + b"0\r\n\r\n"),
            post("/public/login", form + pad),
            # gunicorn refuses the request line or a header before the app sees it
            f"GET /user/welcome?token={access} HTTP/1.1 junk\r\n\r\n".encode(),
            f"GET /user/welcome?token={access}{'a' * 9000} HTTP/1.1\r\n\r\n".encode(),
            f"GET / HTTP/1.1\r\nAuthorization: Bearer {access}{'a' * 9000}\r\n\r\n".encode(),
            f"GET /user/welcome HTTP/1.1\r\nBad Header: {access}\r\n\r\n".encode(),
            f"GET /user/welcome HTTP/1.1\r\nX-Password: {password}\x01\r\n\r\n".encode(),
            f"{password} /public/login HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            # tokens the app refuses: tampered, of the wrong type, a cookie without CSRF
            request_head("GET", "/user/welcome", FORM, Authorization=f"Bearer {access}x") + b"\r\n",
            request_head("GET", "/user/welcome", FORM, Authorization=f"Bearer {refresh}") + b"\r\n",
            post("/user/logout", b"", Cookie=f"jwt={access}"),
            post("/user/publish", f"token={access}&title=".encode()),
        ]
        for payload in failing:
            statuses = exchange(served, payload).statuses
            assert statuses and all(status < 500 for status in statuses), payload
        # RFC 9112 §6.1: a transfer coding the server does not know is 501 Not Implemented
        unknown_coding = request_head("POST", "/public/login", FORM, Transfer_Encoding=password)
        assert exchange(served, unknown_coding + b"\r\n").statuses == [501]
        assert served.request("/public/refresh", {"token": refresh})[0] == 200
        assert served.request("/public/refresh", {"token": refresh})[0] == 401  # reuse: theft
        assert served.request("/user/welcome", headers=bearer)[0] == 401  # its session ended
        # Redis gone: every path that needs it is a 503, and says nothing more in the log
        redis.stop()
        refresh_body = chunk(f"token={refresh}".encode()) + b"0\r\n\r\n"
        for payload in (post("/public/login", form), chunked("/public/refresh", refresh_body)):
            assert exchange(served, payload).statuses == [503]
        assert served.request("/user/welcome", headers=bearer)[0] == 503
    finally:
        stop_wire_server(served, redis)
    assert_clean_log(served, *secrets, server_errors=True)


# A fuzz of the framing itself: any method, path, headers (invalid UTF-8 included), and a body
# that is valid or broken in every way chunked coding and Content-Length can be.
BYTES = st.binary(max_size=40)
TEXT_BYTES = st.one_of(
    BYTES,
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"%ff%fe", b"\x00", b"\r", b"\n"]),
    st.text(max_size=20).map(str.encode),
)


def mostly(clean: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``clean`` three times out of four, else TEXT_BYTES: requests with invalid bytes in the
    path or a header are mostly refused by gunicorn, and the rest must reach the app's body."""
    return st.integers(0, 3).flatmap(lambda n: TEXT_BYTES if n == 3 else clean)


HEADER_VALUES = mostly(st.text(st.characters(min_codepoint=33, max_codepoint=126)).map(str.encode))
PATH_TAILS = mostly(st.text(string.ascii_letters + string.digits + "-._~%=&+/").map(str.encode))
WIRE_PATHS = st.sampled_from(
    [
        b"/public/login",
        b"/public/register",
        b"/public/refresh",
        b"/public/ping",
        b"/public/feed",
        b"/user/welcome",
        b"/user/logout",
        b"/user/publish",
        b"/healthz",
        b"/nowhere",
    ]
)
CONTENT_TYPES = st.sampled_from(
    [
        b"application/x-www-form-urlencoded",
        b"application/json",
        b"multipart/form-data; boundary=xx",
        b"multipart/form-data",
        b"text/plain",
        b"application/json; charset=\xff",
    ]
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["form", "json", "nested", "multipart", "bytes"]))
    if kind == "form":
        return b"username=kesa&password=" + SECRET_PASSWORD.encode() + b"&x=" + draw(TEXT_BYTES)
    if kind == "json":
        return json.dumps({"username": "kesa", "password": SECRET_PASSWORD}).encode()[
            : draw(st.integers(0, 80))
        ] + draw(TEXT_BYTES)
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        return opener * depth + SECRET_PASSWORD.encode() + b"]" * draw(st.integers(0, depth))
    if kind == "multipart":
        part = b'--xx\r\nContent-Disposition: form-data; name="title"\r\n\r\n' + draw(TEXT_BYTES)
        return part + draw(st.sampled_from([b"\r\n--xx--\r\n", b"\r\n--x", b""]))
    return draw(st.binary(max_size=300))


@st.composite
def chunked_framings(draw, body: bytes) -> bytes:
    """``body`` cut into chunks, each size line and terminator right or broken."""
    out, rest = [], body
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        piece, rest = rest[:size], rest[size:]
        size_line = draw(
            st.one_of(
                st.just(b"%x" % len(piece)),
                st.integers(0, 2 * len(piece) + 2).map(lambda n: b"%X" % n),
                st.just(b"%x;name=value" % len(piece)),
                TEXT_BYTES,
            )
        )
        terminator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"", b"XX"]))
        out.append(size_line + b"\r\n" + piece + terminator)
    ending = draw(
        st.sampled_from(
            [b"0\r\n\r\n", b"0\r\n", b"", b"0\r\nX-T: 1\r\n\r\n", b"0\r\nbad trailer\r\n\r\n"]
        )
    )
    return b"".join(out) + ending


@st.composite
def wire_requests(draw) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"POST", b"PUT"]))
    path = (
        draw(WIRE_PATHS)
        + draw(st.sampled_from([b"", b"?token=", b"?"]))
        + draw(PATH_TAILS.filter(lambda tail: b" " not in tail))
    )
    headers = [b"Host: 127.0.0.1", b"Content-Type: " + draw(CONTENT_TYPES)]
    if draw(st.booleans()):
        headers.append(b"Authorization: Bearer " + draw(HEADER_VALUES))
    if draw(st.booleans()):
        headers.append(b"X-Anything: " + draw(HEADER_VALUES))
    body = draw(bodies())
    framing = draw(st.sampled_from(["chunked", "length", "short", "long", "none", "both"]))
    if framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_framings(body))
    elif framing in ("length", "short", "long"):
        delta = {"length": 0, "short": -draw(st.integers(0, len(body))), "long": 10}[framing]
        headers.append(b"Content-Length: %d" % (len(body) + delta))
    elif framing == "both":
        headers += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
    cut = draw(st.one_of(st.none(), st.integers(0, len(body))))  # a truncated body
    head = method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    return head + (body if cut is None else body[:cut])


def test_fuzzed_framing_never_gets_a_5xx_kills_no_worker_and_leaves_the_log_clean(wire):
    workers = wire.worker_pids()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=wire_requests())
    def one_request(payload: bytes) -> None:
        answer = exchange(wire, payload)
        assert all(status < 500 for status in answer.statuses), (payload, answer.raw[:300])

    one_request()
    assert wire.worker_pids() == workers
    assert wire.request("/public/ping") == (200, b"pong")
    assert_clean_log(wire)
