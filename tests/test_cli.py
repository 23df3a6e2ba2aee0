"""The command line on the service's own app (``flask --app main …``), with fakeredis."""

from __future__ import annotations

import fakeredis

from initialize import create_app

SECRET = "cli-test-secret-" + "x" * 32


def test_create_user_checks_the_username_before_asking_for_the_password(fake_redis):
    runner = create_app({"JWT_SECRET": SECRET}, redis_client=fake_redis).test_cli_runner()
    bad = runner.invoke(args=["create-user", "no spaces"])
    assert bad.exit_code == 1 and "3-32 characters" in bad.output
    assert "Password" not in bad.output

    assert runner.invoke(args=["create-user", "dora", "--password", "dora-password"]).exit_code == 0
    taken = runner.invoke(args=["create-user", "dora"])
    assert taken.exit_code == 1 and "already exists" in taken.output
    assert "Password" not in taken.output


def test_create_user_prompts_twice_and_keeps_the_register_rules(fake_redis):
    runner = create_app({"JWT_SECRET": SECRET}, redis_client=fake_redis).test_cli_runner()
    result = runner.invoke(args=["create-user", "emil"], input="emil-password\nemil-password\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1 and "Repeat for confirmation" in result.output
    assert fake_redis.hget("jwt:{emil}:user", "password").startswith("$argon2id$")
    short = runner.invoke(args=["create-user", "fritz", "--password", "short"])
    assert short.exit_code == 1 and not fake_redis.exists("jwt:{fritz}:user")


def test_create_user_answers_an_unreachable_redis_in_one_line():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    runner = create_app({"JWT_SECRET": SECRET}, redis_client=client).test_cli_runner()
    server.connected = False
    result = runner.invoke(args=["create-user", "gina"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "did not answer (ConnectionError)" in lines[0], result.output
    assert "Password" not in result.output
