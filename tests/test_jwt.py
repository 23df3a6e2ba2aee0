"""Token verification: only our key, our algorithm, our issuer/audience, the right type."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from initialize.config import DEVELOPMENT_SECRET
from tests.conftest import AuthActions

BEARER = AuthActions.bearer


def forge(
    claims: dict, key: bytes = DEVELOPMENT_SECRET, algorithm: str = "HS256", **headers
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


def valid_claims(**overrides) -> dict:
    now = int(time.time())
    jti = str(uuid.uuid4())
    claims = {
        "username": "kesa",
        "sub": "kesa",
        "type": "access",
        "jti": jti,
        "uuid": jti,
        "sid": str(uuid.uuid4()),
        "csrf": "c",
        "iss": "jwt-demo",
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def allowlisted(redis_client, claims: dict) -> dict:
    """Record the token and its session as a login would (utils.redis's key layout)."""
    user = "jwt:{" + str(claims.get("username")) + "}:"
    redis_client.set(f"{user}token:{claims['jti']}", "kesa", ex=60)
    redis_client.zadd(f"{user}session:{claims.get('sid')}", {claims["jti"]: 0})
    return claims


def test_a_forged_but_well_formed_token_passes_only_when_allowlisted(client, redis_client):
    claims = valid_claims()
    token = forge(claims)
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401  # jti unknown
    allowlisted(redis_client, claims)
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 200


@pytest.mark.parametrize(
    "claims_overrides,key,algorithm",
    [
        ({"exp": int(time.time()) - 10}, DEVELOPMENT_SECRET, "HS256"),  # expired
        ({"nbf": int(time.time()) + 3600}, DEVELOPMENT_SECRET, "HS256"),  # not yet valid
        ({"exp": None}, DEVELOPMENT_SECRET, "HS256"),  # no exp
        ({"iss": "someone-else"}, DEVELOPMENT_SECRET, "HS256"),
        ({"iss": None}, DEVELOPMENT_SECRET, "HS256"),
        ({"aud": "other-api"}, DEVELOPMENT_SECRET, "HS256"),  # aud not configured here
        ({"type": "refresh"}, DEVELOPMENT_SECRET, "HS256"),
        ({"username": None}, DEVELOPMENT_SECRET, "HS256"),
        ({"sid": None}, DEVELOPMENT_SECRET, "HS256"),
        ({}, b"a-different-secret-of-enough-length!!", "HS256"),  # foreign key
        ({}, DEVELOPMENT_SECRET, "HS512"),  # not the configured algorithm
    ],
)
def test_bad_tokens_are_401_invalid_token_even_if_allowlisted(
    client, redis_client, claims_overrides, key, algorithm
):
    claims = allowlisted(redis_client, valid_claims(**claims_overrides))
    response = client.get("/user/welcome", headers=BEARER(forge(claims, key, algorithm)))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_alg_none_is_refused(client, redis_client):
    claims = allowlisted(redis_client, valid_claims())
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampering_with_any_segment_is_refused(client, auth, part):
    token = auth.login()["accessToken"]
    segments = token.split(".")
    segments[part] = segments[part][:-2] + ("AA" if segments[part][-2:] != "AA" else "BB")
    assert client.get("/user/welcome", headers=BEARER(".".join(segments))).status_code == 401


def test_payload_swap_with_a_valid_signature_elsewhere_is_refused(client, auth, redis_client):
    token = auth.login()["accessToken"]
    header, _, signature = token.split(".")
    # allowlisted, so only the signature check can refuse it
    forged_payload = b64(allowlisted(redis_client, valid_claims(username="admin", sub="admin")))
    assert (
        client.get(
            "/user/welcome", headers=BEARER(f"{header}.{forged_payload}.{signature}")
        ).status_code
        == 401
    )


@pytest.mark.parametrize(
    "token", ["!!!.???.***", f"{b64(b'not json')}.{b64(b'{}')}.x", "a.b", "....", "é.é.é"]
)
def test_garbage_segments_are_401_not_500(client, token):
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401


def test_audience_is_required_when_configured(make_app, redis_client):
    client = make_app(JWT_AUDIENCE="api").test_client()
    without = allowlisted(redis_client, valid_claims())
    assert client.get("/user/welcome", headers=BEARER(forge(without))).status_code == 401
    with_aud = allowlisted(redis_client, valid_claims(aud="api"))
    assert client.get("/user/welcome", headers=BEARER(forge(with_aud))).status_code == 200


def test_expired_token_message(client, redis_client):
    claims = allowlisted(redis_client, valid_claims(exp=int(time.time()) - 5))
    response = client.get("/user/welcome", headers=BEARER(forge(claims)))
    assert response.get_json()["message"] == "The token has expired."
