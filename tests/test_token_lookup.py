"""TOKEN_LOOKUP: gin-jwt syntax, tried in order, first present wins; cookies need CSRF."""

from __future__ import annotations

import pytest

from middleware.jwt import refresh_sources
from tests.conftest import AuthActions
from utils.token_lookup import TokenSource
from utils.token_lookup import parse_token_lookup

BEARER = AuthActions.bearer


def test_parse_default_and_postform_synonym():
    assert parse_token_lookup("header: Authorization, query: token, postform: token") == (
        TokenSource("header", "Authorization"),
        TokenSource("query", "token"),
        TokenSource("form", "token"),
    )


@pytest.mark.parametrize("spec", ["", "header", "header:", "body: token", "header: A,, query: t"])
def test_parse_rejects_bad_entries(spec):
    with pytest.raises(ValueError, match="KIND: NAME"):
        parse_token_lookup(spec)


def test_refresh_sources_swap_cookies_for_jwt_refresh():
    lookup = parse_token_lookup("header: Authorization, cookie: jwt, form: token")
    assert refresh_sources(lookup) == parse_token_lookup(
        "header: Authorization, cookie: jwt_refresh, form: token"
    )
    assert refresh_sources(parse_token_lookup("query: t"))[-1] == TokenSource(
        "cookie", "jwt_refresh"
    )


def test_every_default_source_works(client, auth):
    token = auth.login()["accessToken"]
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 200
    assert client.get(f"/user/welcome?token={token}").status_code == 200
    client.set_cookie("jwt", token)
    assert client.get("/user/welcome").status_code == 200
    client.delete_cookie("jwt")
    response = client.post("/user/logout", data={"token": token})
    assert response.status_code == 200


def test_first_source_wins_even_if_a_later_one_is_valid(client, auth):
    token = auth.login()["accessToken"]
    response = client.get(f"/user/welcome?token={token}", headers=BEARER("not-a-token"))
    assert response.status_code == 401
    assert client.get("/user/welcome?token=junk", headers=BEARER(token)).status_code == 200


def test_custom_lookup_order_and_header(make_app):
    client = make_app(TOKEN_LOOKUP="query: access_token, header: X-Auth").test_client()
    token = AuthActions(client).login()["accessToken"]
    assert client.get(f"/user/welcome?access_token={token}").status_code == 200
    assert client.get("/user/welcome", headers={"X-Auth": f"Bearer {token}"}).status_code == 200
    # Authorization is not a configured source any more.
    assert client.get("/user/welcome", headers=BEARER(token)).status_code == 401


def test_a_huge_token_is_refused_before_parsing(client):
    response = client.get("/user/welcome", headers=BEARER("a" * 10_000))
    assert response.status_code == 401


class TestCookieCsrf:
    """SPEC "Cookies and CSRF": a token from a cookie needs X-CSRF-Token on unsafe requests."""

    @pytest.fixture
    def cookie_client(self, make_app):
        client = make_app(COOKIE_MODE="true").test_client()
        client.post("/public/login", data={"username": "kesa", "password": "123"})
        return client

    def csrf(self, client) -> str:
        return client.get_cookie("csrf_token").value

    def test_login_sets_the_three_cookies(self, make_app):
        client = make_app(COOKIE_MODE="true").test_client()
        response = client.post("/public/login", data={"username": "kesa", "password": "123"})
        cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
        assert "HttpOnly" in cookies["jwt"] and "Path=/;" in cookies["jwt"]
        assert (
            "HttpOnly" in cookies["jwt_refresh"]
            and "Path=/public/refresh" in cookies["jwt_refresh"]
        )
        assert "HttpOnly" not in cookies["csrf_token"]
        assert all("SameSite=Lax" in c for c in cookies.values())
        # development: not Secure, so plain-http localhost works
        assert not any("Secure" in c for c in cookies.values())

    def test_production_cookies_are_secure(self, redis_client):
        from initialize import create_app

        app = create_app(
            {"JWT_SECRET": "s" * 40, "COOKIE_MODE": "yes", "DEMO_USERS": "kesa:123"},
            redis_client=redis_client,
        )
        response = app.test_client().post(
            "/public/login", data={"username": "kesa", "password": "123"}
        )
        assert all("Secure" in c for c in response.headers.getlist("Set-Cookie"))

    def test_get_welcome_by_cookie_needs_no_csrf(self, cookie_client):
        assert cookie_client.get("/user/welcome").status_code == 200

    @pytest.mark.parametrize(
        "path,method",
        [
            ("/user/logout", "get"),
            ("/user/logout", "post"),
            ("/user/logout-all", "post"),
            ("/public/refresh", "get"),
            ("/public/refresh", "post"),
        ],
    )
    def test_state_changing_routes_need_the_csrf_header(self, cookie_client, path, method):
        call = getattr(cookie_client, method)
        missing = call(path)
        assert missing.status_code == 403
        assert missing.get_json()["code"] == 403
        wrong = call(path, headers={"X-CSRF-Token": "wrong"})
        assert wrong.status_code == 403
        # nothing changed: the session still works
        assert cookie_client.get("/user/welcome").status_code == 200
        assert call(path, headers={"X-CSRF-Token": self.csrf(cookie_client)}).status_code == 200

    def test_publish_by_cookie_needs_csrf(self, cookie_client):
        data = {"title": "t"}
        assert cookie_client.post("/user/publish", data=data).status_code == 403
        ok = cookie_client.post(
            "/user/publish", data=data, headers={"X-CSRF-Token": self.csrf(cookie_client)}
        )
        assert ok.status_code == 200

    def test_refresh_by_cookie_sets_new_cookies_and_logout_clears_them(self, cookie_client):
        old_csrf = self.csrf(cookie_client)
        response = cookie_client.post("/public/refresh", headers={"X-CSRF-Token": old_csrf})
        assert response.status_code == 200
        assert self.csrf(cookie_client) != old_csrf
        assert cookie_client.get("/user/welcome").status_code == 200
        logout = cookie_client.post(
            "/user/logout", headers={"X-CSRF-Token": self.csrf(cookie_client)}
        )
        assert logout.status_code == 200
        assert cookie_client.get_cookie("jwt") is None
        assert cookie_client.get_cookie("csrf_token") is None

    def test_login_and_every_refresh_answer_without_a_token(self, make_app):
        """SPEC "Cookies and CSRF": no script can read a token from an answer in cookie mode,
        however the refresh token was presented."""
        client = make_app(COOKIE_MODE="true").test_client()
        facts = {"tokenType", "expiresIn", "refreshExpiresIn", "csrfToken"}
        calls = [
            lambda: client.post("/public/login", data={"username": "kesa", "password": "123"}),
            lambda: client.get("/public/refresh", headers={"X-CSRF-Token": self.csrf(client)}),
            lambda: client.post("/public/refresh", headers={"X-CSRF-Token": self.csrf(client)}),
            lambda: client.post("/public/refresh", headers=BEARER(self.refresh_cookie(client))),
            lambda: client.get(f"/public/refresh?token={self.refresh_cookie(client)}"),
        ]
        for call in calls:
            answer = call()
            assert answer.status_code == 200, answer.get_json()
            body = answer.get_json()
            assert set(body) == facts
            assert body["tokenType"] == "Bearer"
            assert (body["expiresIn"], body["refreshExpiresIn"]) == (900, 604800)
            assert body["csrfToken"] == self.csrf(client)  # the cookie this answer set
            assert answer.headers["Cache-Control"] == "no-store"
            assert b"eyJ" not in answer.data  # no JWT anywhere in the body
        assert client.get("/user/welcome").status_code == 200

    def refresh_cookie(self, client) -> str:
        """The refresh cookie's token, to present in a header or the query instead."""
        return client.get_cookie("jwt_refresh", path="/public/refresh").value

    def test_the_oauth_endpoint_answers_tokens_and_sets_no_cookie(self, make_app):
        client = make_app(COOKIE_MODE="true").test_client()
        form = {"grant_type": "password", "username": "kesa", "password": "123"}
        issued = client.post("/oauth/token", data=form)
        assert issued.status_code == 200
        assert {"access_token", "refresh_token"} <= set(issued.get_json())
        refreshed = client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": issued.get_json()["refresh_token"],
            },
        )
        assert refreshed.status_code == 200 and "refresh_token" in refreshed.get_json()
        for answer in (issued, refreshed):
            assert answer.headers.getlist("Set-Cookie") == []

    def test_header_token_needs_no_csrf_even_in_cookie_mode(self, cookie_client):
        tokens = AuthActions(cookie_client).oauth_login()
        cookie_client.delete_cookie("jwt")
        assert (
            cookie_client.post("/user/logout", headers=BEARER(tokens["accessToken"])).status_code
            == 200
        )

    def test_csrf_applies_to_cookies_outside_cookie_mode(self, client, auth):
        token = auth.login()["accessToken"]
        client.set_cookie("jwt", token)
        assert client.post("/user/logout").status_code == 403
        assert client.get("/user/welcome").status_code == 200
