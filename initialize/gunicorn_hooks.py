"""gunicorn's own answers and logs, made to keep SPEC's promises.

gunicorn answers malformed or oversized requests (414, 431, 400) before the app sees them,
with an HTML page, and logs the offending request line, which may carry ``?token=``. These
hooks make those answers JSON ``{"code", "message"}`` and scrub tokens and query values from
every line of gunicorn's error log.
"""

from __future__ import annotations

import json
import logging
import re
import socket

from gunicorn import glogging
from gunicorn import util

# A JWT anywhere (three base64url segments, the first a JSON header), and any query value.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
_QUERY_VALUE = re.compile(r"([?&][^=\s&'\"]*=)[^\s&'\"]*")


def scrub(text: str) -> str:
    """Replace tokens and query-string values with placeholders."""
    return _QUERY_VALUE.sub(r"\1[redacted]", _JWT.sub("[token]", text))


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
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


class ScrubbingLogger(glogging.Logger):
    """gunicorn's logger with tokens and query values scrubbed from the error log."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        self.error_log.addFilter(_ScrubFilter())
