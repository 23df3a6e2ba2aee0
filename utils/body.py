"""Reading a request body: whatever a client sends is answered 400 or 413, never a 500.

The WSGI server decodes the body while the app reads it (chunked transfer coding, trailers),
so a malformed chunk surfaces as the server's own parse error in the middle of a handler,
which Flask would take for a bug: a 500, and a traceback quoting the bytes around the fault
(a password, a refresh token). And Werkzeug reads a body of unknown length only up to
MAX_CONTENT_LENGTH and stops there without a word, so an oversized chunked body was parsed cut
short instead of refused. :class:`BodyGuard` puts :class:`GuardedInput` between the two, and
:class:`BodyJSONProvider` turns JSON the parser cannot take (nesting deeper than the
interpreter's recursion limit) into a plain malformed body.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import IO
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import RequestEntityTooLarge

Environ = dict[str, Any]
WsgiApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]
DISCARD_STEP = 64 * 1024


class GuardedInput:
    """``wsgi.input`` that fails as a client error and holds at most ``limit`` bytes.

    Any exception the server's stream raises (bad chunk size or terminator, a truncated body,
    a reset connection) becomes :class:`~werkzeug.exceptions.BadRequest`, whose text says
    nothing of the body. A body longer than ``limit`` becomes
    :class:`~werkzeug.exceptions.RequestEntityTooLarge` as soon as its ``limit + 1``-th byte
    arrives: no read asks the server for more than that, whatever size the caller passes.
    """

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._seen = 0

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all, when negative or None), as ``io.RawIOBase.read``."""
        return self._take(self._raw.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        """One line, as PEP 3333 requires of ``wsgi.input``."""
        return self._take(self._raw.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Every remaining line (``hint`` is ignored, as PEP 3333 allows)."""
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def discard(self) -> None:
        """Read and drop the rest of the body, up to the limit; a bad one ends quietly."""
        try:
            while self.read(DISCARD_STEP):
                pass
        except (BadRequest, RequestEntityTooLarge):
            pass  # the app has answered; the server closes a connection whose body failed

    def _take(self, reader: Callable[[int], bytes], size: int | None) -> bytes:
        room = self._limit + 1 - self._seen  # one byte past the limit tells "too large"
        data = self._call(reader, room if size is None or size < 0 else min(size, room))
        self._seen += len(data)
        if self._seen > self._limit:
            raise RequestEntityTooLarge()
        # A reader bounded by the limit itself (Werkzeug's) stops asking at exactly ``limit``
        # bytes: look one byte further, or a longer body would pass for a complete one.
        if data and self._seen == self._limit and self._call(self._raw.read, 1):
            raise RequestEntityTooLarge()
        return data

    @staticmethod
    def _call(reader: Callable[[int], bytes], size: int) -> bytes:
        try:
            return reader(size)
        except Exception:
            # The server's message quotes the offending bytes: none of it goes further.
            raise BadRequest() from None


class BodyGuard:
    """WSGI middleware: the app reads every request body through :class:`GuardedInput`.

    A body of unknown length (chunked) that the app left unread, or read only in part, is read
    to its end here, before the answer leaves: otherwise the server parses the rest itself to
    keep the connection alive, and a framing error found there is logged with the bytes around
    it and answered with a second response behind the app's. Read here, the error only marks
    the server's stream as failed, so the connection closes after the app's answer.
    """

    def __init__(self, wsgi_app: WsgiApp, limit: int) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        length_known = bool(environ.get("CONTENT_LENGTH"))
        if not length_known and "HTTP_TRANSFER_ENCODING" not in environ:
            return self.wsgi_app(environ, start_response)  # RFC 9112 §6.3: no body at all
        body = environ["wsgi.input"] = GuardedInput(environ["wsgi.input"], self.limit)
        response = self.wsgi_app(environ, start_response)
        if not length_known:
            body.discard()
        return response


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a document too deeply nested to parse is malformed, not a crash.

    ``json.loads`` recurses once per nesting level: a few kilobytes of ``[`` raise
    RecursionError, which ``request.get_json`` would let through as a 500. As a ValueError it
    takes the path of any other invalid JSON (``silent`` gives None, else a 400).
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """``json.loads``, with RecursionError reported as the ValueError of invalid JSON."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
