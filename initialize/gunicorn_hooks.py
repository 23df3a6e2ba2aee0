"""gunicorn's own answers and logs, made to keep SPEC's promises.

gunicorn answers malformed or oversized requests (414, 431, 400) before the app sees them,
with an HTML page, and logs what it could not parse: the request line, which may carry
``?token=``, a header, or the bytes of a malformed chunk (a password, a refresh token). These
hooks make those answers JSON ``{"code", "message"}`` and scrub tokens, query values and the
request bytes gunicorn quotes from every line of gunicorn's error log; a traceback keeps its
frames and exception type but not its message, where a parser would quote its input.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import traceback
from types import TracebackType

from gunicorn import glogging
from gunicorn import util

# A JWT anywhere (three base64url segments, the first a JSON header), and any query value.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
_QUERY_VALUE = re.compile(r"([?&][^=\s&'\"]*=)[^\s&'\"]*")
# What gunicorn read from the client, quoted with %r in its messages: b'...', '...', "...".
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" r'|b?"(?:[^"\\]|\\.)*"')


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


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's stand-in: the same status line, a JSON body."""
    body = json.dumps({"code": status_int, "message": f"{reason}."}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install_json_errors() -> None:
    """Route gunicorn's early error answers through :func:`write_json_error`."""
    util.write_error = write_json_error


class _ScrubFilter(logging.Filter):
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
        self.error_log.addFilter(_ScrubFilter())
