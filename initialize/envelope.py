"""The WSGI layer every request passes first: request id, client address, security headers
and request metrics, in one call.

They live outside Flask so that an answer made before any Flask hook runs (the body guard's,
an error page) still carries its id and headers and is counted. They share one call and one
``start_response`` wrapper because on the hot path each extra layer, and each Flask hook with
its per-call checks, costs a measurable share of a whole request (BENCHMARKS.md, issue 13).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from flask import Flask
from flask import Response
from flask import request

from initialize.headers import SECURITY_HEADERS
from utils.audit import CLIENT_KEY
from utils.audit import REQUEST_ID_KEY
from utils.body import Environ
from utils.body import WsgiApp
from utils.metrics import Metrics
from utils.net import client_address

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The URL rule that answered (``/user/sessions/<id>``), left in the environ by the app for the
# metrics: Flask's request object is gone once the app has returned.
ROUTE_KEY = "flask_jwt_redis.route"


class _RequestIdSource:
    """Made request ids: 32 hex digits, a random prefix per process and a counter (unique
    without ``uuid4``'s call into the kernel each time; not secret, nothing relies on guessing
    one being hard). A forked child draws a new prefix."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = _RequestIdSource()
os.register_at_fork(after_in_child=_REQUEST_IDS.reseed)


def new_request_id() -> str:
    """A fresh request id, unique across the processes of this host."""
    return _REQUEST_IDS.new_id()


class RequestEnvelope:
    """WSGI middleware (module docstring).

    Keeps a well-formed ``X-Request-ID`` or makes one, hands it and the client address to the
    app and the access line (environ), echoes the id and adds the security headers on every
    answer, and counts and times every answer under its URL rule.
    """

    def __init__(self, app: WsgiApp, trusted_proxies: frozenset[str], metrics: Metrics) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.metrics = metrics
        self.security_headers = list(SECURITY_HEADERS.items())

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if request_id is None or not REQUEST_ID_PATTERN.fullmatch(request_id):
            request_id = new_request_id()
        environ[REQUEST_ID_KEY] = request_id
        environ[CLIENT_KEY] = client_address(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.trusted_proxies
        )
        statuses = []

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            statuses.append(status)
            headers.extend(self.security_headers)
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        response = self.app(environ, start_with_headers)
        if statuses:
            self.metrics.observe_request(
                environ.get("REQUEST_METHOD", ""),
                environ.get(ROUTE_KEY),
                int(statuses[-1][:3]),
                time.perf_counter() - started,
            )
        return response


def register_route_label(app: Flask) -> None:
    """Leave each answer's URL rule in the environ for :class:`RequestEnvelope`'s metrics
    (``after_request`` runs for error answers too; an unmatched path has no rule)."""

    @app.after_request
    def label_route(response: Response) -> Response:
        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_KEY] = rule.rule
        return response
