"""Asymmetric keys: RS256, ES256, EdDSA, kid = RFC 7638 thumbprint, JWKS, rotation, confusion."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from initialize import create_app
from initialize.config import ConfigError
from initialize.config import load_settings
from tests.conftest import AuthActions
from tests.test_jwt import allowlisted
from tests.test_jwt import b64
from tests.test_jwt import valid_claims
from utils.keys import generate_private_key_pem
from utils.keys import public_key_pem
from utils.keys import thumbprint

BEARER = AuthActions.bearer
ALGORITHMS = ["RS256", "ES256", "EdDSA"]


def write_key_pair(directory, algorithm: str, name: str = "key"):
    private = directory / f"{name}.pem"
    private.write_bytes(generate_private_key_pem(algorithm))
    public = directory / f"{name}.pem.pub"
    public.write_bytes(public_key_pem(private.read_bytes()))
    return private, public


def asymmetric_app(redis_client, algorithm: str, private, previous=()):
    environ = {
        "JWT_ALGORITHM": algorithm,
        "JWT_PRIVATE_KEY_FILE": str(private),
        "JWT_PREVIOUS_PUBLIC_KEY_FILES": ",".join(str(p) for p in previous),
        "DEMO_USERS": "kesa:123",
    }
    return create_app(environ, redis_client=redis_client)


def test_rfc7638_thumbprint_example():
    """The worked example of RFC 7638 §3.1."""
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
        "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFT"
        "WhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    key = RSAAlgorithm.from_jwk(json.dumps(jwk))
    assert thumbprint(key, "RS256") == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sign_with_kid_verify_and_publish(redis_client, tmp_path, algorithm):
    private, public = write_key_pair(tmp_path, algorithm)
    client = asymmetric_app(redis_client, algorithm, private).test_client()
    tokens = AuthActions(client).login()
    header = jwt.get_unverified_header(tokens["accessToken"])
    public_key = serialization.load_pem_public_key(public.read_bytes())
    assert header["alg"] == algorithm
    assert header["kid"] == thumbprint(public_key, algorithm)
    assert client.get("/user/welcome", headers=BEARER(tokens["accessToken"])).status_code == 200
    refreshed = client.get("/public/refresh", headers=BEARER(tokens["refreshToken"]))
    assert refreshed.status_code == 200

    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    (jwk,) = jwks.get_json()["keys"]
    assert (jwk["kid"], jwk["use"], jwk["alg"]) == (header["kid"], "sig", algorithm)
    assert "d" not in jwk  # never the private part
    verifier = jwt.PyJWK(jwk).key
    claims = jwt.decode(tokens["accessToken"], verifier, algorithms=[algorithm], issuer="jwt-demo")
    assert claims["username"] == "kesa"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hs256_signed_with_the_public_key_is_refused(redis_client, tmp_path, algorithm):
    """Key confusion (RFC 8725 §2.1): an HMAC token whose 'secret' is our public key."""
    private, public = write_key_pair(tmp_path, algorithm)
    app = asymmetric_app(redis_client, algorithm, private)
    client = app.test_client()
    legit = AuthActions(client).login()["accessToken"]
    claims = jwt.decode(legit, options={"verify_signature": False})
    kid = jwt.get_unverified_header(legit)["kid"]
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    assert client.get("/user/welcome", headers=BEARER(forged)).status_code == 401


def forge_with_foreign_key(claims, **headers) -> str:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, foreign, algorithm="RS256", headers=headers)


def test_unknown_missing_and_remote_key_headers_are_refused(redis_client, tmp_path):
    private, _ = write_key_pair(tmp_path, "RS256")
    client = asymmetric_app(redis_client, "RS256", private).test_client()
    legit = AuthActions(client).login()["accessToken"]
    claims = jwt.decode(legit, options={"verify_signature": False})
    kid = jwt.get_unverified_header(legit)["kid"]
    foreign_jwk = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(65537, 2048).public_key(), as_dict=True
    )
    forged = [
        forge_with_foreign_key(claims),  # no kid
        forge_with_foreign_key(claims, kid="not-ours"),
        forge_with_foreign_key(claims, kid=kid),  # our kid, someone else's key
        forge_with_foreign_key(claims, kid="x", jku="http://127.0.0.1:9/jwks.json"),
        forge_with_foreign_key(claims, kid="x", x5u="http://127.0.0.1:9/cert.pem"),
        forge_with_foreign_key(claims, jwk=foreign_jwk),
    ]
    for token in forged:
        response = client.get("/user/welcome", headers=BEARER(token))
        assert response.status_code == 401, jwt.get_unverified_header(token)


def test_rotation_keeps_old_tokens_valid_while_the_old_key_is_listed(redis_client, tmp_path):
    old_private, old_public = write_key_pair(tmp_path, "ES256", "old")
    new_private, _ = write_key_pair(tmp_path, "ES256", "new")
    old_tokens = AuthActions(
        asymmetric_app(redis_client, "ES256", old_private).test_client()
    ).login()

    rotated = asymmetric_app(
        redis_client, "ES256", new_private, previous=[old_public]
    ).test_client()
    assert (
        rotated.get("/user/welcome", headers=BEARER(old_tokens["accessToken"])).status_code == 200
    )
    kids = {key["kid"] for key in rotated.get("/.well-known/jwks.json").get_json()["keys"]}
    old_kid = jwt.get_unverified_header(old_tokens["accessToken"])["kid"]
    assert len(kids) == 2 and old_kid in kids
    new_tokens = AuthActions(rotated).login()
    assert jwt.get_unverified_header(new_tokens["accessToken"])["kid"] != old_kid

    dropped = asymmetric_app(redis_client, "ES256", new_private).test_client()
    assert (
        dropped.get("/user/welcome", headers=BEARER(old_tokens["accessToken"])).status_code == 401
    )
    assert (
        dropped.get("/user/welcome", headers=BEARER(new_tokens["accessToken"])).status_code == 200
    )


def test_asymmetric_needs_no_secret_even_in_production(tmp_path):
    private, _ = write_key_pair(tmp_path, "EdDSA")
    settings = load_settings({"JWT_ALGORITHM": "EdDSA", "JWT_PRIVATE_KEY_FILE": str(private)})
    assert settings.keys.is_asymmetric and settings.app_env == "production"


def test_hmac_token_of_the_right_shape_is_refused_under_rs256(redis_client, tmp_path):
    private, _ = write_key_pair(tmp_path, "RS256")
    client = asymmetric_app(redis_client, "RS256", private).test_client()
    claims = allowlisted(redis_client, valid_claims())
    token = jwt.encode(claims, "x" * 64, algorithm="HS256")
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401


@pytest.mark.parametrize(
    "algorithm,key_algorithm,variable",
    [
        ("RS256", "ES256", "JWT_PRIVATE_KEY_FILE"),
        ("ES256", "EdDSA", "JWT_PRIVATE_KEY_FILE"),
        ("EdDSA", "RS256", "JWT_PRIVATE_KEY_FILE"),
    ],
)
def test_a_key_of_the_wrong_type_stops_start_up(tmp_path, algorithm, key_algorithm, variable):
    private, _ = write_key_pair(tmp_path, key_algorithm)
    with pytest.raises(ConfigError) as caught:
        load_settings({"JWT_ALGORITHM": algorithm, "JWT_PRIVATE_KEY_FILE": str(private)})
    assert caught.value.variable == variable


def test_bad_key_files_name_their_variable(tmp_path):
    weak = tmp_path / "weak.pem"
    weak.write_bytes(
        rsa.generate_private_key(65537, 1024).private_bytes(  # noqa: S505 (the weak key under test)
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    private, _ = write_key_pair(tmp_path, "RS256")
    cases = [
        ({"JWT_PRIVATE_KEY_FILE": str(weak)}, "JWT_PRIVATE_KEY_FILE"),
        ({"JWT_PRIVATE_KEY_FILE": str(garbage)}, "JWT_PRIVATE_KEY_FILE"),
        ({"JWT_PRIVATE_KEY_FILE": str(tmp_path / "missing.pem")}, "JWT_PRIVATE_KEY_FILE"),
        (
            {"JWT_PRIVATE_KEY_FILE": str(private), "JWT_PREVIOUS_PUBLIC_KEY_FILES": str(garbage)},
            "JWT_PREVIOUS_PUBLIC_KEY_FILES",
        ),
    ]
    for environ, variable in cases:
        with pytest.raises(ConfigError) as caught:
            load_settings({"JWT_ALGORITHM": "RS256", **environ})
        assert caught.value.variable == variable
        assert "\n" not in str(caught.value)


def test_cli_generates_a_private_key_file_readable_only_by_its_owner(fake_redis, tmp_path):
    app = create_app({"APP_ENV": "development"}, redis_client=fake_redis)
    target = tmp_path / "keys" / "jwt.pem"
    result = app.test_cli_runner().invoke(
        args=["generate-keys", "--algorithm", "EdDSA", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in (tmp_path / "keys" / "jwt.pem.pub").read_bytes()
    settings = load_settings({"JWT_ALGORITHM": "EdDSA", "JWT_PRIVATE_KEY_FILE": str(target)})
    assert settings.keys.is_asymmetric
    again = app.test_cli_runner().invoke(args=["generate-keys", str(target)])
    assert again.exit_code == 1 and "not overwriting" in again.output
