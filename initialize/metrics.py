"""Request metrics: every answer counted and timed under its URL rule, never its raw path."""

from __future__ import annotations

import time

from flask import Flask
from flask import Response
from flask import g
from flask import request

from utils.metrics import Metrics


def register_request_metrics(app: Flask, metrics: Metrics) -> None:
    """Time each request from the first hook to the last (errors included: they are answers)."""

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.get("request_started")
        elapsed = 0.0 if started is None else time.perf_counter() - started
        rule = request.url_rule
        metrics.observe_request(
            request.method, None if rule is None else rule.rule, response.status_code, elapsed
        )
        return response
