"""Reading request bodies: server stream errors are 400, oversize bodies 413, deep JSON 400.

Unit tests of utils.body, then the app through Flask's test client with a stream that fails
the way gunicorn's chunked reader does (the same cases against a real gunicorn are in
test_attacks).
"""

from __future__ import annotations

import io
import logging

import pytest
from gunicorn.http.errors import ChunkMissingTerminator
from gunicorn.http.errors import InvalidChunkSize
from gunicorn.http.errors import NoMoreData
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import RequestEntityTooLarge

from utils.body import BodyGuard
from utils.body import GuardedInput

SECRET = "hunter2-secret-password"


class FailingStream(io.RawIOBase):
    """Serves ``data``, then raises ``error`` as gunicorn's chunked reader does mid-body."""

    def __init__(self, data: bytes, error: Exception) -> None:
        self.data, self.error, self.reads = data, error, []

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        if self.data:
            piece = self.data if size < 0 else self.data[:size]
            self.data = self.data[len(piece) :]
            return piece
        raise self.error

    readline = read


class TestGuardedInput:
    def test_reads_a_body_within_the_limit_in_any_steps(self):
        body = GuardedInput(io.BytesIO(b"a=1\nb=2\n"), limit=8)
        assert body.read(2) == b"a="
        assert body.readline() == b"1\n"
        assert body.readlines() == [b"b=2\n"]
        assert body.read() == b""

    @pytest.mark.parametrize(
        "error",
        [
            InvalidChunkSize(SECRET.encode()),
            ChunkMissingTerminator(b"pa"),
            NoMoreData(SECRET.encode()),
            ConnectionResetError(),
            ValueError(SECRET),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_any_stream_error_is_a_bad_request_that_quotes_nothing(self, error):
        body = GuardedInput(FailingStream(b"username=kesa&", error), limit=100)
        assert body.read() == b"username=kesa&"
        with pytest.raises(BadRequest) as raised:
            body.read()
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
        assert SECRET not in str(raised.value)

    def test_a_body_over_the_limit_is_413_and_never_read_much_past_it(self):
        raw = FailingStream(b"x" * 1000, AssertionError("read past the limit"))
        body = GuardedInput(raw, limit=10)
        with pytest.raises(RequestEntityTooLarge):
            body.read()
        assert raw.reads == [11]  # the limit and one byte to tell "more"

    def test_a_reader_that_stops_at_the_limit_still_sees_the_413(self):
        # Werkzeug's LimitedStream asks for exactly the bytes left to the limit, never one more
        body = GuardedInput(io.BytesIO(b"x" * 11), limit=10)
        with pytest.raises(RequestEntityTooLarge):
            body.read(10)

    def test_a_body_of_exactly_the_limit_is_whole(self):
        body = GuardedInput(io.BytesIO(b"x" * 10), limit=10)
        assert body.read(10) == b"x" * 10
        assert body.read(10) == b""

    def test_discard_reads_to_the_end_and_swallows_what_the_app_no_longer_answers(self):
        raw = io.BytesIO(b"y" * 200_000)
        GuardedInput(raw, limit=10**6).discard()
        assert raw.read() == b""
        GuardedInput(FailingStream(b"", InvalidChunkSize(b"zz")), limit=10).discard()
        GuardedInput(io.BytesIO(b"z" * 20), limit=10).discard()


class TestBodyGuard:
    def run(self, environ: dict) -> tuple[bytes, object]:
        seen = {}

        def app(environ, start_response):
            seen["input"] = environ["wsgi.input"]
            return [b"ok"]

        result = b"".join(BodyGuard(app, limit=100)(environ, lambda *a: None))
        return result, seen["input"]

    def test_a_request_without_a_body_passes_untouched(self):
        raw = io.BytesIO()
        assert self.run({"wsgi.input": raw}) == (b"ok", raw)

    def test_a_body_of_known_length_is_guarded_and_left_to_the_server(self):
        raw = io.BytesIO(b"unread")
        _, body = self.run({"wsgi.input": raw, "CONTENT_LENGTH": "6"})
        assert isinstance(body, GuardedInput)
        assert raw.read() == b"unread"

    def test_a_chunked_body_the_app_did_not_read_is_read_before_the_answer(self):
        raw = io.BytesIO(b"unread")
        _, body = self.run({"wsgi.input": raw, "HTTP_TRANSFER_ENCODING": "chunked"})
        assert isinstance(body, GuardedInput)
        assert raw.read() == b""


# ------------------------------------------------------------------ through the app


def chunked_post(client, path: str, stream: io.RawIOBase, content_type: str):
    """A request whose body has no length, as a chunked one reaches the app from gunicorn."""
    return client.post(
        path,
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={
            "wsgi.input": stream,
            "wsgi.input_terminated": True,  # gunicorn's promise: it decodes the chunks
            "CONTENT_LENGTH": "",
        },
    )


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = "multipart/form-data; boundary=x"
# Every route that reads a body, with each kind of body it reads.
BODY_READS = [
    *[(path, kind) for path in ("/public/login", "/public/register") for kind in (FORM, JSON)],
    *[(path, MULTIPART) for path in ("/public/login", "/public/register", "/user/publish")],
    ("/public/refresh", FORM),
    ("/public/refresh", MULTIPART),
]


@pytest.mark.parametrize("path,content_type", BODY_READS)
def test_a_body_that_breaks_off_with_a_framing_error_is_400_and_logs_nothing(
    client, caplog, path, content_type
):
    stream = FailingStream(f"username=kesa&password={SECRET}".encode(), InvalidChunkSize(b"!"))
    with caplog.at_level(logging.DEBUG):
        response = chunked_post(client, path, stream, content_type)
    assert response.status_code == 400
    assert response.get_json() == {"code": 400, "message": "The request is malformed."}
    assert caplog.records == []


def test_a_body_the_route_does_not_read_gets_the_routes_answer_and_logs_nothing(client, caplog):
    # the token guard reads only form fields, so a JSON body is never parsed: 401 (no token)
    stream = FailingStream(b'{"token": "x"}', InvalidChunkSize(b"!"))
    with caplog.at_level(logging.DEBUG):
        response = chunked_post(client, "/public/refresh", stream, JSON)
    assert response.status_code == 401
    assert stream.data == b""  # read to the failure before the answer left
    assert caplog.records == []


@pytest.mark.parametrize("content_type", [FORM, JSON])
def test_a_chunked_body_over_max_content_length_is_413(make_app, content_type):
    client = make_app(MAX_CONTENT_LENGTH="1000").test_client()
    body = b"username=kesa&password=123&pad=" + b"a" * 2000
    response = chunked_post(client, "/public/login", io.BytesIO(body), content_type)
    assert response.status_code == 413
    assert response.get_json() == {"code": 413, "message": "The request body is too large."}


def test_a_chunked_body_within_max_content_length_still_logs_in(make_app):
    client = make_app(MAX_CONTENT_LENGTH="1000").test_client()
    body = b"username=kesa&password=123"
    response = chunked_post(client, "/public/login", io.BytesIO(body), FORM)
    assert response.status_code == 200
    assert response.get_json()["tokenType"] == "Bearer"


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
@pytest.mark.parametrize("path", ["/public/login", "/public/register"])
def test_deeply_nested_json_is_400_and_logs_nothing(
    client, caplog, redis_client, path, opener, depth
):
    before = sorted(redis_client.keys("*"))
    closer = "]" if opener == "[" else "}"
    body = opener * depth + "1" + closer * depth
    with caplog.at_level(logging.DEBUG):
        response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["code"] == 400
    assert caplog.records == []
    assert sorted(redis_client.keys("*")) == before
