"""The per-worker verified-token cache: skips re-verifying signatures, never the clock."""

from __future__ import annotations

import time

import jwt

from devtools.processes import wait_until
from tests.conftest import AuthActions
from utils.state import get_tokens
from utils.tokens import VerifiedTokenCache

BEARER = AuthActions.bearer


def test_hit_within_the_time_window_only():
    cache = VerifiedTokenCache()
    now = time.time()
    cache.put("t", {"exp": now + 10, "nbf": now - 1})
    assert cache.get("t", now) is not None
    assert cache.get("t", now + 10) is None  # exp reached: expired, like PyJWT
    assert cache.get("t", now - 5) is None  # before nbf
    assert cache.get("other", now) is None


def test_bounded_and_evicts_the_oldest():
    cache = VerifiedTokenCache(max_entries=3)
    exp = {"exp": time.time() + 60}
    for token in "abcd":
        cache.put(token, exp)
    now = time.time()
    assert cache.get("a", now) is None
    assert all(cache.get(token, now) for token in "bcd")


def test_a_cached_token_skips_the_signature_check(client, auth, monkeypatch):
    token = auth.login()["accessToken"]
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 200

    def must_not_verify(*args, **kwargs):
        raise AssertionError("signature verified twice")

    monkeypatch.setattr("utils.tokens.Tokens._verify_signature_and_claims", must_not_verify)
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 200


def test_only_access_tokens_are_cached(client, auth, app):
    """A refresh token is presented once; caching it would only push access tokens out."""
    tokens = auth.login()
    assert client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code == 200
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200
    with app.app_context():
        cache, now = get_tokens().cache, time.time()
    assert cache.get(tokens["refreshToken"], now) is None
    assert cache.get(tokens["accessToken"], now) is not None
    # a spent refresh token presented again is verified again, then refused as reused
    assert client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).status_code == 401


def test_a_cached_token_is_still_checked_against_redis_and_type(client, auth):
    tokens = auth.login()
    headers = BEARER(tokens["accessToken"])
    assert client.get("/user/welcome", headers=headers).status_code == 200
    assert client.get("/public/refresh", headers=headers).status_code == 401  # wrong type
    client.get("/user/logout", headers=headers)
    assert client.get("/user/welcome", headers=headers).status_code == 401  # revoked


def test_a_cached_token_expires_on_time(make_app):
    client = make_app(ACCESS_TOKEN_TTL="2").test_client()
    token = AuthActions(client).login()["accessToken"]
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 200  # now cached
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert wait_until(lambda: time.time() >= expires, timeout=3, interval=0.01)
    response = client.get("/user/welcome", headers=BEARER(token))
    assert response.status_code == 401
    assert response.get_json()["message"] == "The token has expired."
