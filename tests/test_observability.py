"""Operations in process: request ids, audit events, metrics, the log formats, OpenAPI."""

from __future__ import annotations

import itertools
import json
import logging
import re

import fakeredis
import jsonschema
import jwt
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from api.v1.openapi import openapi_document
from initialize import create_app
from initialize.logs import line_renderer
from initialize.logs import render_access_logfmt
from tests.conftest import DEV_ENV
from tests.conftest import AuthActions

BEARER = AuthActions.bearer
KESA = {"username": "kesa", "password": "123"}


def samples(client, **environ) -> dict[tuple[str, tuple], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    response = client.get("/metrics", environ_base=environ)
    assert response.status_code == 200, response.data
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def requests_total(metrics: dict, method: str, route: str, status: str) -> float:
    labels = tuple(sorted({"method": method, "route": route, "status": status}.items()))
    return metrics.get(("http_requests_total", labels), 0.0)


class TestRequestId:
    def test_a_well_formed_id_is_kept_and_echoed(self, client):
        response = client.get("/public/ping", headers={"X-Request-ID": "abc-123_X.9"})
        assert response.headers["X-Request-ID"] == "abc-123_X.9"

    @pytest.mark.parametrize("presented", [None, "", "a" * 65, "has space", "semi;colon", "é"])
    def test_a_missing_or_malformed_id_is_replaced(self, client, presented):
        headers = {} if presented is None else {"X-Request-ID": presented}
        first = client.get("/public/ping", headers=headers).headers["X-Request-ID"]
        second = client.get("/public/ping", headers=headers).headers["X-Request-ID"]
        assert first != presented and len(first) == 32 and first != second

    def test_errors_carry_the_id_too(self, client):
        response = client.get("/nowhere", headers={"X-Request-ID": "trace-1"})
        assert response.status_code == 404
        assert response.headers["X-Request-ID"] == "trace-1"


AUDIT_EVENTS = {
    "login_succeeded",
    "login_failed",
    "login_locked",
    "registered",
    "refreshed",
    "refresh_reuse_detected",
    "logout",
    "logout_all",
    "session_ended",
    "password_changed",
    "token_revoked",
    "register_throttled",
}


class TestAudit:
    def events(self, capsys) -> list[dict]:
        lines = (json.loads(line) for line in capsys.readouterr().out.splitlines())
        return [line for line in lines if line["event"] in AUDIT_EVENTS]

    def test_each_flow_emits_its_event_with_request_id_user_client_sid(self, make_app, capsys):
        client = make_app(LOG_FORMAT="json").test_client()
        auth = AuthActions(client)
        assert (
            client.post(
                "/public/register",
                data={"username": "alice", "password": "correct-horse"},
                headers={"X-Request-ID": "reg-1"},
            ).status_code
            == 201
        )
        assert client.post("/public/login", data={**KESA, "password": "no"}).status_code == 401
        tokens = auth.login()
        fresh = client.get("/public/refresh", headers=BEARER(tokens["refreshToken"])).get_json()
        client.get("/public/refresh", headers=BEARER(tokens["refreshToken"]))  # reuse
        second = auth.login()
        client.get("/user/logout", headers=BEARER(second["accessToken"]))
        third = auth.login()
        client.post("/user/logout-all", headers=BEARER(third["accessToken"]))
        output = capsys.readouterr().out
        events = [e for e in map(json.loads, output.splitlines()) if e["event"] in AUDIT_EVENTS]
        assert [e["event"] for e in events] == [
            "registered",
            "login_failed",
            "login_succeeded",
            "refreshed",
            "refresh_reuse_detected",
            "login_succeeded",
            "logout",
            "login_succeeded",
            "logout_all",
        ]
        assert events[0]["request_id"] == "reg-1" and events[0]["user"] == "alice"
        assert all(e["client"] == "127.0.0.1" and len(e["request_id"]) > 0 for e in events)
        assert events[1]["user"] == "kesa" and "sid" not in events[1]
        assert events[2]["sid"] == events[3]["sid"] == events[4]["sid"]
        for secret in (tokens["accessToken"], tokens["refreshToken"], fresh["accessToken"]):
            assert secret not in output
        assert "correct-horse" not in output

    def test_session_password_and_revocation_flows_emit_their_events(self, make_app, capsys):
        client = make_app(LOG_FORMAT="json").test_client()
        auth = AuthActions(client)
        mine, other, revoked = auth.login(), auth.login(), auth.login()
        other_sid = jwt.decode(other["accessToken"], options={"verify_signature": False})["sid"]
        client.delete(f"/user/sessions/{other_sid}", headers=BEARER(mine["accessToken"]))
        client.post("/oauth/revoke", data={"token": revoked["refreshToken"]})
        change = {"password": "123", "newPassword": "a-new-password"}
        client.post("/user/password", data=change, headers=BEARER(mine["accessToken"]))
        oauth = client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": "kesa", "password": "a-new-password"},
        ).get_json()
        client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": oauth["refresh_token"]},
        )
        events = self.events(capsys)
        assert [e["event"] for e in events][3:] == [
            "session_ended",
            "token_revoked",
            "password_changed",
            "login_succeeded",
            "refreshed",
        ]
        assert events[3]["sid"] == other_sid
        mine_sid = jwt.decode(mine["accessToken"], options={"verify_signature": False})["sid"]
        assert events[5]["sid"] == mine_sid and events[5]["user"] == "kesa"
        output = "\n".join(map(str, events))
        assert "a-new-password" not in output and revoked["refreshToken"] not in output

    def test_a_locked_login_is_its_own_event(self, make_app, capsys):
        client = make_app(LOGIN_MAX_FAILURES="1", LOG_FORMAT="json").test_client()
        client.post("/public/login", data={**KESA, "password": "no"})
        assert client.post("/public/login", data=KESA).status_code == 429
        assert [e["event"] for e in self.events(capsys)] == ["login_failed", "login_locked"]

    def test_failed_logins_name_the_user_only_when_the_account_exists(self, make_app, capsys):
        client = make_app(LOGIN_MAX_FAILURES="1", LOG_FORMAT="json").test_client()
        typed = {"username": "Tr0ub4dor", "password": "no"}  # a password in the wrong field
        for body in (typed, typed, {**KESA, "password": "no"}, {**KESA, "password": "no"}):
            client.post("/public/login", data=body)
        events = self.events(capsys)
        assert [(e["event"], e.get("user")) for e in events] == [
            ("login_failed", None),
            ("login_locked", None),
            ("login_failed", "kesa"),
            ("login_locked", "kesa"),
        ]
        assert all(e["client"] for e in events)
        assert "Tr0ub4dor" not in capsys.readouterr().out

    def test_a_throttled_registration_is_its_own_event_without_a_user(self, make_app, capsys):
        client = make_app(REGISTER_MAX_PER_ADDRESS="1", LOG_FORMAT="json").test_client()
        for name in ("first1", "second2"):
            client.post("/public/register", data={"username": name, "password": "long-enough"})
        events = self.events(capsys)
        assert [e["event"] for e in events] == ["registered", "register_throttled"]
        assert "user" not in events[1] and events[1]["client"] and events[1]["request_id"]

    def test_events_are_counted(self, client):
        client.post("/public/login", data={**KESA, "password": "no"})
        AuthActions(client).login()
        metrics = samples(client)
        assert metrics[("auth_events_total", (("event", "login_failed"),))] == 1
        assert metrics[("auth_events_total", (("event", "login_succeeded"),))] == 1


class TestMetrics:
    def test_requests_are_counted_by_url_rule_and_status(self, client):
        tokens = AuthActions(client).login()
        for _ in range(3):
            client.get("/user/welcome", headers=BEARER(tokens["accessToken"]))
        client.get("/user/welcome", headers=BEARER("nope"))
        client.get("/no/such/path?token=secret")
        metrics = samples(client)
        assert requests_total(metrics, "GET", "/user/welcome", "200") == 3
        assert requests_total(metrics, "GET", "/user/welcome", "401") == 1
        assert requests_total(metrics, "GET", "unmatched", "404") == 1
        assert requests_total(metrics, "POST", "/public/login", "200") == 1
        assert metrics[("http_request_duration_seconds_count", (("route", "/user/welcome"),))] == 4
        assert not any("secret" in str(key) or "/no/such" in str(key) for key in metrics)

    def test_redis_errors_are_counted(self):
        server = fakeredis.FakeServer()
        app = create_app(DEV_ENV, redis_client=fakeredis.FakeRedis(server=server))
        client = app.test_client()
        server.connected = False
        assert client.get("/readyz").status_code == 503
        assert client.post("/public/login", data=KESA).status_code == 503
        assert samples(client)[("redis_errors_total", ())] == 2

    @pytest.mark.parametrize(
        "allow,address,visible",
        [
            (None, "127.0.0.1", True),
            (None, "::1", True),
            (None, "10.0.0.5", False),
            ("10.0.0.0/8", "10.1.2.3", True),
            ("10.0.0.0/8", "127.0.0.1", False),
            ("*", "203.0.113.9", True),
            ("*", "2001:db8::1", True),
        ],
    )
    def test_only_allowed_addresses_see_metrics(self, make_app, allow, address, visible):
        app = make_app() if allow is None else make_app(METRICS_ALLOW_IPS=allow)
        response = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address})
        if visible:
            assert response.status_code == 200
            assert response.content_type.startswith("text/plain; version=")
        else:
            assert response.status_code == 404
            assert response.get_json() == {"code": 404, "message": "No such path."}

    def test_a_forged_forwarded_for_from_an_untrusted_peer_does_not_open_metrics(self, client):
        response = client.get(
            "/metrics",
            environ_base={"REMOTE_ADDR": "10.0.0.5"},
            headers={"X-Forwarded-For": "127.0.0.1"},
        )
        assert response.status_code == 404


SECRET_PASSWORD = "correct-horse-battery-staple"
FAKE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrZXNhIn0.c2lnbmF0dXJl"


class TestLogLines:
    """The service's own lines (audit here; the access line is gunicorn's: test_operations)."""

    @pytest.mark.parametrize("log_format", ["json", "text"])
    def test_an_audit_line_in_each_format(self, make_app, capsys, log_format):
        client = make_app(LOG_FORMAT=log_format).test_client()
        client.post("/public/login", data=KESA, headers={"X-Request-ID": "r-1"})
        (line,) = [x for x in capsys.readouterr().out.splitlines() if "login_succeeded" in x]
        if log_format == "json":
            fields = json.loads(line)
        else:
            fields = dict(part.split("=", 1) for part in line.split(" "))
            assert line.startswith("ts=")
        assert fields["event"] == "login_succeeded" and fields["level"] == "info"
        assert (fields["request_id"], fields["user"], fields["client"]) == (
            "r-1",
            "kesa",
            "127.0.0.1",
        )
        assert fields["sid"] and fields["ts"].endswith("Z")

    def test_stdlib_records_share_the_format(self, make_app, capsys):
        make_app(LOG_FORMAT="json")
        logging.getLogger("some.library").warning("disk %s", "full")
        (line,) = [x for x in capsys.readouterr().out.splitlines() if "disk" in x]
        fields = json.loads(line)
        assert (fields["event"], fields["level"]) == ("disk full", "warning")
        assert "ts" in fields

    def test_an_unexpected_error_is_logged_without_what_it_quoted(self, make_app, capsys):
        """A bug's exception message may quote the request (a password, a token): the line keeps
        the exception type and its frames, not its message."""
        app = make_app(LOG_FORMAT="json")

        def broken() -> str:
            raise ValueError(f"could not parse password={SECRET_PASSWORD} token={FAKE_JWT}")

        app.add_url_rule("/broken", view_func=broken)
        response = app.test_client().get("/broken")
        assert response.status_code == 500
        assert response.get_json() == {"code": 500, "message": "Internal error."}
        (line,) = [x for x in capsys.readouterr().out.splitlines() if "Unhandled" in x]
        fields = json.loads(line)
        assert fields["event"] == "Unhandled ValueError" and fields["level"] == "error"
        assert "builtins.ValueError (message withheld)" in fields["exception"]
        assert "in broken" in fields["exception"]  # the frames stay
        assert SECRET_PASSWORD not in line and FAKE_JWT not in line


# Values that meet each of logfmt's quoting and escaping rules, alone and together.
ACCESS_TEXTS = [
    None,
    "",
    "a",
    "a b",
    "a=b",
    'a"b',
    "a\\b",
    "a\\ b",
    "a\nb",
    "\t",
    "é😀",
    'x"=\\ \ny',
]


class TestAccessLineRenderer:
    """The access line is rendered without structlog's per-line key checks: it must still be
    the very line structlog's renderer writes, whatever a client put in its fields."""

    @pytest.mark.parametrize("status, duration", [(200, 0.5), (431, 12345.678)])
    def test_the_line_is_structlogs_line(self, status, duration):
        for path, client, user in itertools.product(ACCESS_TEXTS, repeat=3):
            line = {
                "level": "info",
                "event": "request",
                "request_id": "r-1",
                "method": "GET",
                "path": path,
                "status": status,
                "duration_ms": duration,
                "client": client,
                "bytes": 0,
                "user": user,
                "ts": "2026-12-02T05:00:00.000000Z",
            }
            expected = line_renderer("text")(None, "info", dict(line))
            assert render_access_logfmt(dict(line)) == expected
            assert expected.startswith("ts=2026-12-02T05:00:00.000000Z level=info event=request")
            # JSON lines are the standard library's json.dumps, as structlog's JSONRenderer's are
            assert json.dumps(line) == line_renderer("json")(None, "info", dict(line))


class TestOpenApi:
    def test_the_document_is_valid_openapi_3_1(self, client):
        document = client.get("/openapi.json").get_json()
        validate(document)
        assert document["openapi"].startswith("3.1")

    def test_login_answers_of_both_modes_match_the_document(self, make_app):
        """Bearer mode's tokens and cookie mode's token-free answer are the documented shapes."""
        document = openapi_document()
        login = document["paths"]["/public/login"]["post"]["responses"]["200"]
        schema = {**login["content"]["application/json"]["schema"], **document}
        validator = jsonschema.Draft202012Validator(schema)
        for cookie_mode in ("false", "true"):
            client = make_app(COOKIE_MODE=cookie_mode).test_client()
            body = client.post("/public/login", data=KESA).get_json()
            validator.validate(body)
            if cookie_mode == "true":
                assert not validator.is_valid({**body, "accessToken": "a-token"})

    def test_it_documents_exactly_the_routes_and_methods_of_the_url_map(self, app):
        served = {
            (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}
        }
        documented = {
            (path, method) for path, item in openapi_document()["paths"].items() for method in item
        }
        assert documented == served
