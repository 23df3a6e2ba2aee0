"""One HTTP request to a server the tests started on 127.0.0.1 (never through a proxy)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str, url: str, *, data: dict | None = None, token: str | None = None
) -> tuple[int, str]:
    """(status, body text); ``data`` is sent as a form, ``token`` as a Bearer header."""
    assert url.startswith("http://127.0.0.1:")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with NO_PROXY.open(request, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
