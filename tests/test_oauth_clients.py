"""Standard OAuth 2.0 and JOSE client libraries against the live service, unchanged.

Authlib's requests client (a public client with the password grant and automatic refresh),
PyJWT's ``PyJWKClient`` (verifying with the published keys and no secret) and a resource server
that introspects: each over real HTTP, against the private redis-server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from collections.abc import Iterator

import jwt
import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from werkzeug.serving import make_server

from devtools.processes import wait_until
from initialize import create_app
from tests.conftest import DEV_ENV
from utils.keys import generate_private_key_pem

INTROSPECTION_CLIENT = ("resource-api", "introspection-secret-0123")


@pytest.fixture
def serve(real_redis) -> Iterator[Callable[..., str]]:
    """Start the app with extra settings on a free loopback port; returns its base URL."""
    servers = []

    def start(**environ: str) -> str:
        app = create_app({**DEV_ENV, **environ}, redis_client=real_redis)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_authlib_password_grant_welcome_refresh_and_automatic_refresh(serve):
    base = serve(ACCESS_TOKEN_TTL="2")
    updates: list[str] = []

    def update_token(token: dict, refresh_token: str | None = None, **_: object) -> None:
        updates.append(token["access_token"])

    with OAuth2Session(
        client_id="cli",
        token_endpoint=f"{base}/oauth/token",
        update_token=update_token,
        leeway=0,
    ) as session:
        # as docs/sessions-and-oauth.md shows
        first = session.fetch_token(username="kesa", password="123")
        assert first["token_type"] == "Bearer"
        assert first["expires_in"] == 2
        assert session.get(f"{base}/user/welcome").text == "Welcome ! kesa"

        second = session.refresh_token(f"{base}/oauth/token")
        assert second["access_token"] != first["access_token"]
        assert session.get(f"{base}/user/welcome").text == "Welcome ! kesa"

        # The access token expires (by Authlib's clock, later than the service's): the session
        # refreshes before the call.
        assert wait_until(lambda: session.token.is_expired(leeway=0), timeout=4, interval=0.02)
        response = session.get(f"{base}/user/welcome")
        assert response.status_code == 200, response.text
        assert response.text == "Welcome ! kesa"
        assert len(updates) == 2
        assert session.token["access_token"] == updates[-1] != second["access_token"]

    # The refresh tokens Authlib spent are spent for everyone.
    reused = requests.post(
        f"{base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        timeout=10,
    )
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_authlib_sees_rfc6749_errors(serve):
    base = serve()
    with OAuth2Session(client_id="cli") as session, pytest.raises(OAuthError) as raised:
        session.fetch_token(f"{base}/oauth/token", username="kesa", password="wrong-one")
    assert raised.value.error == "invalid_grant"
    assert raised.value.description == "Please provide valid login details."


def test_pyjwkclient_verifies_an_es256_access_token_without_a_secret(serve, tmp_path):
    key_file = tmp_path / "jwt-es256.pem"
    key_file.write_bytes(generate_private_key_pem("ES256"))
    base = serve(JWT_ALGORITHM="ES256", JWT_PRIVATE_KEY_FILE=str(key_file))
    tokens = requests.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "username": "kesa", "password": "123"},
        timeout=10,
    ).json()

    jwks_client = jwt.PyJWKClient(f"{base}/.well-known/jwks.json")
    signing_key = jwks_client.get_signing_key_from_jwt(tokens["access_token"])
    claims = jwt.decode(
        tokens["access_token"], signing_key.key, algorithms=["ES256"], issuer="jwt-demo"
    )
    assert (claims["sub"], claims["type"]) == ("kesa", "access")

    header, _, signature = tokens["access_token"].split(".")
    forged_claims = {**claims, "sub": "admin", "username": "admin"}
    forged_payload = jwt.utils.base64url_encode(json.dumps(forged_claims).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{header}.{forged_payload}.{signature}",
            signing_key.key,
            algorithms=["ES256"],
            issuer="jwt-demo",
        )


def test_a_resource_server_sees_logout_through_introspection(serve):
    client_id, secret = INTROSPECTION_CLIENT
    base = serve(INTROSPECTION_CLIENTS=f"{client_id}:{secret}")
    login = requests.post(
        f"{base}/public/login", data={"username": "kesa", "password": "123"}, timeout=10
    ).json()

    def introspect() -> dict:
        response = requests.post(
            f"{base}/oauth/introspect",
            data={"token": login["accessToken"]},
            auth=(client_id, secret),
            timeout=10,
        )
        assert response.status_code == 200
        return response.json()

    assert introspect()["active"] is True
    logout = requests.get(
        f"{base}/user/logout",
        headers={"Authorization": f"Bearer {login['accessToken']}"},
        timeout=10,
    )
    assert logout.status_code == 200
    assert introspect() == {"active": False}


def test_authlib_revocation_ends_the_session(serve):
    base = serve()
    with OAuth2Session(client_id="cli") as session:
        token = session.fetch_token(f"{base}/oauth/token", username="kesa", password="123")
        revoked = session.revoke_token(f"{base}/oauth/revoke", token=token["refresh_token"])
        assert revoked.status_code == 200
        assert session.get(f"{base}/user/welcome").status_code == 401
