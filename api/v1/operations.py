"""For operators and client tooling: Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from http import HTTPStatus

from flask import Response
from flask import abort
from flask import jsonify
from flask import request

from api.v1.openapi import openapi_document
from utils.audit import CLIENT_KEY
from utils.net import address_in
from utils.state import get_metrics
from utils.state import get_settings


def metrics() -> Response:
    """The Prometheus exposition, for METRICS_ALLOW_IPS only: anyone else sees no such path."""
    client = request.environ.get(CLIENT_KEY) or request.remote_addr or ""
    if not address_in(client, get_settings().metrics_allow_ips):
        abort(HTTPStatus.NOT_FOUND)
    body, content_type = get_metrics().render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def openapi() -> Response:
    """The OpenAPI 3.1 description of every route this service has."""
    return jsonify(openapi_document())
