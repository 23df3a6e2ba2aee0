"""Configuration is read once and validated: a bad value names its variable, never a secret."""

from __future__ import annotations

import pytest

from initialize import create_app
from initialize.config import DEVELOPMENT_SECRET
from initialize.config import ConfigError
from initialize.config import load_settings
from utils.token_lookup import TokenSource

SECRET = "s" * 40


def test_production_defaults():
    settings = load_settings({"JWT_SECRET": SECRET})
    assert settings.app_env == "production"
    assert settings.jwt_algorithm == "HS256"
    assert settings.keys.signing_key == SECRET.encode()
    assert settings.jwt_issuer == "jwt-demo"
    assert settings.jwt_audience is None
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 604800)
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.redis_key_prefix == "jwt:"
    assert (settings.redis_mode, settings.redis_sentinels) == ("standalone", ())
    assert settings.redis_sentinel_master == "mymaster"
    assert (settings.redis_socket_timeout, settings.redis_connect_timeout) == (2.0, 1.0)
    assert settings.allowlist_cache_seconds == 1.0
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (0, 500)
    assert settings.token_lookup[0] == TokenSource("header", "Authorization")
    assert [s.kind for s in settings.token_lookup] == ["header", "query", "cookie", "form"]
    assert settings.demo_users == ()
    assert (settings.login_max_failures, settings.login_lock_seconds) == (10, 900)
    assert settings.cookie_mode is False and settings.cors_origins == ()


def test_sentinel_settings():
    settings = load_settings(
        {
            "JWT_SECRET": SECRET,
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
            "REDIS_SENTINEL_MASTER": "jwt",
            "REDIS_SOCKET_TIMEOUT": "0.5",
        }
    )
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert (settings.redis_sentinel_master, settings.redis_socket_timeout) == ("jwt", 0.5)


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, (0, 500)),
        ({"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "h:1"}, (1, 500)),
        ({"REDIS_MODE": "cluster"}, (1, 500)),
        ({"REDIS_MODE": "cluster", "REDIS_WAIT_REPLICAS": "0"}, (0, 500)),
        ({"REDIS_WAIT_REPLICAS": "2", "REDIS_WAIT_TIMEOUT_MS": "1500"}, (2, 1500)),
    ],
)
def test_durable_changes_wait_for_a_replica_where_there_are_replicas(environ, expected):
    settings = load_settings({"JWT_SECRET": SECRET, **environ})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == expected


def test_development_allows_the_dev_secret_and_seeds_kesa():
    settings = load_settings({"APP_ENV": "development"})
    assert settings.keys.signing_key == DEVELOPMENT_SECRET
    assert settings.demo_users == (("kesa", "123"),)


def test_secret_file_strips_one_trailing_newline(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"f" * 40 + b"\n")
    assert load_settings({"JWT_SECRET_FILE": str(path)}).keys.signing_key == b"f" * 40


@pytest.mark.parametrize(
    "environ,variable",
    [
        ({}, "JWT_SECRET"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_SECRET": SECRET, "JWT_SECRET_FILE": "/x"}, "JWT_SECRET"),
        ({"JWT_SECRET_FILE": "/nonexistent/secret"}, "JWT_SECRET_FILE"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHM": "HS512"}, "JWT_SECRET"),  # RFC 7518: 64 bytes
        ({"JWT_SECRET": SECRET, "APP_ENV": "staging"}, "APP_ENV"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHM": "RS256"}, "JWT_PRIVATE_KEY_FILE"),
        ({"JWT_SECRET": SECRET, "ACCESS_TOKEN_TTL": "0"}, "ACCESS_TOKEN_TTL"),
        ({"JWT_SECRET": SECRET, "ACCESS_TOKEN_TTL": "15m"}, "ACCESS_TOKEN_TTL"),
        ({"JWT_SECRET": SECRET, "REFRESH_TOKEN_TTL": "-1"}, "REFRESH_TOKEN_TTL"),
        ({"JWT_SECRET": SECRET, "REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"JWT_SECRET": SECRET, "REDIS_MODE": "replicated"}, "REDIS_MODE"),
        ({"JWT_SECRET": SECRET, "REDIS_MODE": "sentinel"}, "REDIS_SENTINELS"),
        (
            {"JWT_SECRET": SECRET, "REDIS_MODE": "sentinel", "REDIS_SENTINELS": "h"},
            "REDIS_SENTINELS",
        ),
        ({"JWT_SECRET": SECRET, "REDIS_SENTINELS": "h:26379,h:0"}, "REDIS_SENTINELS"),
        (
            {"JWT_SECRET": SECRET, "REDIS_MODE": "cluster", "REDIS_URL": "unix:///r.sock"},
            "REDIS_URL",
        ),
        ({"JWT_SECRET": SECRET, "REDIS_SOCKET_TIMEOUT": "0"}, "REDIS_SOCKET_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REDIS_SOCKET_TIMEOUT": "nan"}, "REDIS_SOCKET_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REDIS_SOCKET_TIMEOUT": "inf"}, "REDIS_SOCKET_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REDIS_CONNECT_TIMEOUT": "1s"}, "REDIS_CONNECT_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REDIS_KEY_PREFIX": "{jwt}:"}, "REDIS_KEY_PREFIX"),
        ({"JWT_SECRET": SECRET, "REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS"),
        ({"JWT_SECRET": SECRET, "REDIS_WAIT_REPLICAS": "one"}, "REDIS_WAIT_REPLICAS"),
        ({"JWT_SECRET": SECRET, "REDIS_WAIT_TIMEOUT_MS": "0"}, "REDIS_WAIT_TIMEOUT_MS"),
        ({"JWT_SECRET": SECRET, "REDIS_WAIT_TIMEOUT_MS": "0.5"}, "REDIS_WAIT_TIMEOUT_MS"),
        ({"JWT_SECRET": SECRET, "ALLOWLIST_CACHE_SECONDS": "-1"}, "ALLOWLIST_CACHE_SECONDS"),
        ({"JWT_SECRET": SECRET, "ALLOWLIST_CACHE_SECONDS": "61"}, "ALLOWLIST_CACHE_SECONDS"),
        ({"JWT_SECRET": SECRET, "ALLOWLIST_CACHE_SECONDS": "nan"}, "ALLOWLIST_CACHE_SECONDS"),
        ({"JWT_SECRET": SECRET, "ALLOWLIST_CACHE_SECONDS": "1s"}, "ALLOWLIST_CACHE_SECONDS"),
        ({"JWT_SECRET": SECRET, "TOKEN_LOOKUP": "body: token"}, "TOKEN_LOOKUP"),
        ({"JWT_SECRET": SECRET, "DEMO_USERS": "kesa"}, "DEMO_USERS"),
        ({"JWT_SECRET": SECRET, "DEMO_USERS": "k:1"}, "DEMO_USERS"),
        ({"JWT_SECRET": SECRET, "LOGIN_MAX_FAILURES": "many"}, "LOGIN_MAX_FAILURES"),
        ({"JWT_SECRET": SECRET, "LOGIN_LOCK_SECONDS": "0"}, "LOGIN_LOCK_SECONDS"),
        ({"JWT_SECRET": SECRET, "ACCOUNT_MAX_FAILURES": "0"}, "ACCOUNT_MAX_FAILURES"),
        ({"JWT_SECRET": SECRET, "REGISTER_MAX_PER_ADDRESS": "ten"}, "REGISTER_MAX_PER_ADDRESS"),
        ({"JWT_SECRET": SECRET, "REGISTER_WINDOW_SECONDS": "-5"}, "REGISTER_WINDOW_SECONDS"),
        ({"JWT_SECRET": SECRET, "COOKIE_MODE": "maybe"}, "COOKIE_MODE"),
        ({"JWT_SECRET": SECRET, "CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"JWT_SECRET": SECRET, "JWT_ISSUER": " "}, "JWT_ISSUER"),
    ],
)
def test_bad_values_name_the_variable(environ, variable):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert caught.value.variable == variable
    message = str(caught.value)
    assert message.startswith(f"configuration error: {variable} ")
    assert "\n" not in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "raw,expected", [("true", True), ("YES", True), ("1", True), ("no", False), ("0", False)]
)
def test_booleans(raw, expected):
    assert load_settings({"JWT_SECRET": SECRET, "COOKIE_MODE": raw}).cookie_mode is expected


def test_create_app_is_not_testing_and_does_not_touch_redis_until_used(fake_redis):
    app = create_app({"JWT_SECRET": SECRET}, redis_client=fake_redis)
    assert not app.testing
    assert fake_redis.keys("*") == []  # production seeds nobody


def test_production_demo_users_are_opt_in(fake_redis):
    create_app({"JWT_SECRET": SECRET, "DEMO_USERS": "ops:pw, kesa:123"}, redis_client=fake_redis)
    assert sorted(fake_redis.keys("*")) == ["jwt:{kesa}:user", "jwt:{ops}:user"]


def test_key_prefix_applies_to_every_key(fake_redis):
    client = create_app(
        {"APP_ENV": "development", "REDIS_KEY_PREFIX": "svc1:"}, redis_client=fake_redis
    ).test_client()
    tokens = client.post("/public/login", data={"username": "kesa", "password": "123"}).get_json()
    client.get("/public/refresh", headers={"Authorization": f"Bearer {tokens['refreshToken']}"})
    client.post("/public/login", data={"username": "kesa", "password": "bad"})
    keys = fake_redis.keys("*")
    assert len(keys) > 4 and all(key.startswith("svc1:") for key in keys)


def test_cli_create_user_prompts_for_the_password(fake_redis):
    app = create_app({"JWT_SECRET": SECRET}, redis_client=fake_redis)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "frank"], input="frank-password\nfrank-password\n")
    assert result.exit_code == 0, result.output
    assert "frank-password" not in result.output
    assert fake_redis.hget("jwt:{frank}:user", "password").startswith("$argon2id$")
    again = runner.invoke(args=["create-user", "frank"], input="other-password\nother-password\n")
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(args=["create-user", "gina"], input="short\nshort\n")
    assert short.exit_code == 1 and not fake_redis.exists("jwt:{gina}:user")


def test_operations_and_server_defaults():
    production = load_settings({"JWT_SECRET": SECRET})
    assert production.log_format == "json"
    assert [str(n) for n in production.metrics_allow_ips] == ["127.0.0.1/32", "::1/128"]
    assert production.server.bind == "127.0.0.1:9090"
    assert (production.server.worker_class, production.server.threads) == ("threads", 4)
    assert production.server.client_header_timeout == 10
    assert (
        load_settings(
            {"JWT_SECRET": SECRET, "CLIENT_HEADER_TIMEOUT": "2.5"}
        ).server.client_header_timeout
        == 2.5
    )
    development = load_settings({"APP_ENV": "development", "PORT": "9191"})
    assert development.log_format == "text" and development.server.bind == "127.0.0.1:9191"


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({"GUNICORN_THREADS": "8"}, ("threads", 8)),
        ({"GUNICORN_WORKER_CLASS": "threads", "GUNICORN_THREADS": "1"}, ("threads", 1)),
        # gunicorn's rule: sync with threads runs gthread
        ({"GUNICORN_WORKER_CLASS": "sync", "GUNICORN_THREADS": "4"}, ("gthread", 4)),
        ({"GUNICORN_WORKER_CLASS": "gthread"}, ("gthread", 4)),
        ({"GUNICORN_WORKER_CLASS": "sync"}, ("sync", 1)),
    ],
)
def test_worker_class_and_threads(environ, expected):
    server = load_settings({"APP_ENV": "development", **environ}).server
    assert (server.worker_class, server.threads) == expected


@pytest.mark.parametrize(
    "variable,value",
    [
        ("LOG_FORMAT", "yaml"),
        ("METRICS_ALLOW_IPS", "127.0.0.1, example.com"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("BIND", "127.0.0.1"),
        ("BIND", "0.0.0.0:99999"),
        ("WEB_CONCURRENCY", "-1"),
        ("GUNICORN_THREADS", "lots"),
        ("GUNICORN_WORKER_CLASS", "gevent"),
        ("CLIENT_HEADER_TIMEOUT", "0"),
        ("CLIENT_HEADER_TIMEOUT", "soon"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics"),
    ],
)
def test_bad_operations_values_name_their_variable(variable, value):
    with pytest.raises(ConfigError) as error:
        load_settings({"APP_ENV": "development", variable: value})
    assert error.value.variable == variable
