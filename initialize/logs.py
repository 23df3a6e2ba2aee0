"""Logs: one line per record on stdout, JSON or logfmt text (LOG_FORMAT), app and gunicorn alike.

structlog renders every line. The service's own lines (the access line gunicorn writes after
each response, audit events) go straight from a structlog logger to stdout: no stdlib
``logging`` record, no handler chain, which is most of what a log line costs. Lines from
stdlib loggers (gunicorn's error log, Flask, libraries) reach the same renderer through
structlog's ``ProcessorFormatter``. Every line has ``ts``, ``level`` and ``event``.

The request id travels in the WSGI environ, which the app and gunicorn's access logger share:
initialize/envelope.py stores the id and the client address there, the token guard the
authenticated user, and the access line reads them back.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from typing import Any
from typing import TextIO

import structlog
from structlog.typing import EventDict
from structlog.typing import FilteringBoundLogger
from structlog.typing import Processor
from structlog.typing import WrappedLogger

from initialize.gunicorn_hooks import ScrubbingLogger
from initialize.gunicorn_hooks import ScrubFilter
from utils.audit import CLIENT_KEY
from utils.audit import REQUEST_ID_KEY
from utils.audit import USER_KEY

ACCESS_EVENT = "request"
_HANDLER_NAME = "flask-jwt-redis"
_FIRST_KEYS = ["ts", "level", "event"]


def line_renderer(log_format: str) -> Processor:
    """structlog's renderer of LOG_FORMAT, the last step of every line."""
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.processors.LogfmtRenderer(key_order=_FIRST_KEYS, drop_missing=True)


def _common_processors() -> list[Processor]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]


def build_logger(log_format: str, stream: TextIO | None = None) -> FilteringBoundLogger:
    """A structlog logger writing LOG_FORMAT lines to ``stream`` (default: stdout)."""
    return structlog.wrap_logger(
        structlog.WriteLogger(stream or sys.stdout),
        processors=[*_common_processors(), line_renderer(log_format)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def _prefer_rendered_exception(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Keep an exception text a logging filter already rendered (and scrubbed)."""
    record = event.get("_record")
    if record is not None and record.exc_text and "exc_info" in event:
        del event["exc_info"]
        event["exception"] = record.exc_text
    return event


def build_formatter(log_format: str) -> logging.Formatter:
    """The stdlib ``logging`` formatter of LOG_FORMAT, for records from other loggers."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_common_processors(), _prefer_rendered_exception],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            line_renderer(log_format),
        ],
    )


def configure_logging(log_format: str) -> None:
    """Send the process's stdlib log records (Flask's, libraries') to stdout in LOG_FORMAT,
    scrubbed as gunicorn's error log is: an exception's message may quote the request, so a
    traceback keeps its frames only.

    Replaces only the handler this function installed before, so building several apps in one
    process (tests) does not stack handlers.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(build_formatter(log_format))
    handler.addFilter(ScrubFilter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class GunicornLogger(ScrubbingLogger):
    """gunicorn's logger in the service's format, with an access line built from fields.

    gunicorn's own ``access()`` formats some thirty "atoms" (every header, every environ
    variable, a strftime) for each request before its format string picks a few; this one
    reads the fields SPEC names and nothing else. ``log_format`` is set by
    :func:`gunicorn_logger_class`.
    """

    log_format = "json"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = build_formatter(self.log_format)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(formatter)
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)  # SPEC: logs go to stdout, errors included
        # The access line skips structlog's bound-logger pipeline (context copy, processor loop):
        # the same timestamp, called directly, and the same line as structlog's renderer gives
        # (render_access_logfmt), on the hottest path there is.
        self._stamp = _common_processors()[1]
        self._render = json.dumps if self.log_format == "json" else render_access_logfmt
        self._out = structlog.WriteLogger(sys.stdout)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One ``request`` line per response; the path never carries its query string."""
        if not self.access_log_enabled:
            return
        line = {
            "level": "info",
            "event": ACCESS_EVENT,
            "request_id": environ.get(REQUEST_ID_KEY),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": _status_code(resp),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "client": environ.get(CLIENT_KEY) or environ.get("REMOTE_ADDR"),
            "bytes": resp.sent,
        }
        user = environ.get(USER_KEY)
        if user is not None:
            line["user"] = user
        self._out.msg(self._render(self._stamp(None, "info", line)))


def render_access_logfmt(line: dict[str, Any]) -> str:
    """The access line in logfmt, exactly as structlog's ``LogfmtRenderer`` (:func:`line_renderer`)
    writes it: ``ts``, ``level`` and ``event`` first, values quoted and escaped by its rules.

    structlog's renderer also checks every key, character by character, on every line; the
    access line's keys are this module's constants, and that check was the largest part of
    the line's cost (BENCHMARKS.md). Its values are strings, numbers or None (a test holds
    the two renderers to the same output).
    """
    ordered = [key for key in _FIRST_KEYS if key in line]
    ordered += [key for key in line if key not in _FIRST_KEYS]
    return " ".join(f"{key}={_logfmt_value(line[key])}" for key in ordered)


def _logfmt_value(value: str | float | None) -> str:
    if not isinstance(value, str):  # a number's text needs no quotes; None is empty
        return "" if value is None else str(value)
    quoted = " " in value or "=" in value or '"' in value
    if quoted and "\\" in value:
        value = value.replace("\\", "\\\\")
    value = value.replace('"', '\\"').replace("\n", "\\n")
    return f'"{value}"' if quoted else value


def _status_code(resp: Any) -> int:
    """The status of a response the app made, or of gunicorn's own error answer (whose
    Response carries only the ``"400 Bad Request"`` status line)."""
    code = getattr(resp, "status_code", None)
    return code if code is not None else int(str(resp.status).split(None, 1)[0])


def gunicorn_logger_class(log_format: str) -> type[GunicornLogger]:
    """gunicorn's ``logger_class`` for LOG_FORMAT."""
    return type("GunicornLogger", (GunicornLogger,), {"log_format": log_format})
