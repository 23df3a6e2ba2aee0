"""gunicorn's own answers and logs, made to keep SPEC's promises.

gunicorn answers malformed or oversized requests (400, 414, 431, 501...) before the app sees
them, with an HTML page, and logs what it could not parse: the request line, which may carry
``?token=``, a header, or the bytes of a malformed chunk (a password, a refresh token). This
module makes those answers JSON ``{"code", "message"}`` and scrubs tokens, query values and the
request bytes gunicorn quotes from every line of gunicorn's error log; a traceback keeps its
frames and exception type but not its message, where a parser would quote its input.

Both go through gunicorn's documented extension points, nothing of gunicorn is replaced:

* the answers: ``worker_class`` takes "a Python path to a subclass of
  ``gunicorn.workers.base.Worker``" (gunicorn's settings reference). :data:`WORKER_CLASSES`
  maps each GUNICORN_WORKER_CLASS value to a subclass of the class gunicorn would run for it,
  which extends the public ``Worker.handle_error``. That method still decides everything: the
  status and reason of each parse error, its warning line, its access line. It is handed a
  stand-in for the client socket (:class:`_AnswerRecorder`) to write its HTML answer to; the
  subclass keeps the status line of that answer and sends the client the same status line
  with a JSON body. So the codes and reasons stay gunicorn's own, for every error it knows
  today or learns in a later release, rather than a copy of its table kept here by hand (the
  other public option: a full ``handle_error`` of our own, some sixty lines of gunicorn's
  mapping and logging to keep in step). No gunicorn release has a hook for error pages.
* the log: ``logger_class`` (:class:`ScrubbingLogger`, a subclass of gunicorn's logger) adds
  a ``logging.Filter`` to its error log.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import traceback
from types import TracebackType
from typing import Any

from gunicorn import glogging
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

# A JWT anywhere (three base64url segments, the first a JSON header), and any query value.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
_QUERY_VALUE = re.compile(r"([?&][^=\s&'\"]*=)[^\s&'\"]*")
# What gunicorn read from the client, quoted with %r in its messages: b'...', '...', "...".
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" r'|b?"(?:[^"\\]|\\.)*"')
# The status line of the answer gunicorn writes: "HTTP/1.1 431 Request Header Fields Too Large".
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3}) ([^\r\n]*)\r\n")
# Should gunicorn one day write no status line, the client still gets an answer.
_NO_STATUS = (500, "Internal Server Error")


def scrub(text: str) -> str:
    """Replace tokens, query-string values and quoted request bytes with placeholders."""
    return _QUOTED.sub("[redacted]", _QUERY_VALUE.sub(r"\1[redacted]", _JWT.sub("[token]", text)))


def frames_only(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> str:
    """A traceback without the exception's message, which may quote the request."""
    exc_type, _, tb = exc_info
    frames = "".join(traceback.format_tb(tb))
    name = f"{exc_type.__module__}.{exc_type.__qualname__}"
    return f"Traceback (most recent call last):\n{frames}{name} (message withheld)"


def json_error(status_int: int, reason: str) -> bytes:
    """gunicorn's error answer with a JSON body: the same status line, ``Connection: close``."""
    body = json.dumps({"code": status_int, "message": f"{reason}."}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _AnswerRecorder:
    """Takes the client socket's place while gunicorn writes its error answer, and keeps it."""

    def __init__(self) -> None:
        self.written = bytearray()

    def gettimeout(self) -> float | None:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def settimeout(self, value: float | None) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.written += data

    def send(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def status(self) -> tuple[int, str]:
        """The status code and reason of the recorded answer's status line."""
        match = _STATUS_LINE.match(self.written)
        if match is None:
            return _NO_STATUS
        return int(match[1]), match[2].decode("latin-1")


def _send_without_blocking(sock: socket.socket, data: bytes) -> None:
    """Send as gunicorn sends its error answers: never wait on a client that does not read."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.sendall(data)
    finally:
        sock.settimeout(timeout)


class JsonErrors(Worker):
    """Mixin for a gunicorn worker class: its early error answers carry a JSON body."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        recorder = _AnswerRecorder()
        super().handle_error(req, recorder, addr, exc)
        try:
            _send_without_blocking(client, json_error(*recorder.status()))
        except Exception:  # the client has gone: gunicorn's own answer would fail alike
            self.log.debug("Failed to send error message.")


class SyncJsonErrorWorker(JsonErrors, SyncWorker):
    """gunicorn's ``sync`` worker, answering its early errors in JSON."""


class ThreadJsonErrorWorker(JsonErrors, ThreadWorker):
    """gunicorn's ``gthread`` worker, answering its early errors in JSON."""


# GUNICORN_WORKER_CLASS (initialize/config.py's WORKER_CLASSES) -> gunicorn's ``worker_class``.
# No name ends in "SyncWorker", so gunicorn runs the class named here, always: it would swap
# such a class for its own gthread worker when threads > 1 (which config.py turns into gthread).
# The "threads" class is named, not imported: it needs epoll, which only Linux has.
WORKER_CLASSES = {
    "threads": "initialize.thread_worker.SharedPollJsonErrorWorker",
    "gthread": f"{__name__}.{ThreadJsonErrorWorker.__qualname__}",
    "sync": f"{__name__}.{SyncJsonErrorWorker.__qualname__}",
}


class ScrubFilter(logging.Filter):
    """Scrub a record's message (:func:`scrub`) and keep only the frames of its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = frames_only(record.exc_info)
        return True


class ScrubbingLogger(glogging.Logger):
    """gunicorn's logger with tokens, query values and request bytes scrubbed from the error
    log."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        self.error_log.addFilter(ScrubFilter())
