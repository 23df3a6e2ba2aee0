"""The command line on the service's own app (``flask --app main …``), with fakeredis."""

from __future__ import annotations

import fakeredis
import pytest

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


# ------------------------------------------------------------------ the users group


def users_runner(redis_client):
    """The Flask command line of an app on ``redis_client`` (text logs: an audit line is
    ``event=… admin=…``)."""
    app = create_app({"JWT_SECRET": SECRET, "LOG_FORMAT": "text"}, redis_client=redis_client)
    return app, app.test_cli_runner()


def login(app, username: str, password: str):
    return app.test_client().post(
        "/public/login", data={"username": username, "password": password}
    )


def test_users_commands_do_what_the_admin_routes_do(fake_redis, capsys):
    app, runner = users_runner(fake_redis)

    def users(*args: str, **kwargs):
        result = runner.invoke(args=["users", *args], **kwargs)
        return result

    created = users("create", "alice", input="alice-password\nalice-password\n")
    assert created.exit_code == 0, created.output
    assert "Created user 'alice'." in created.output
    audit_line = capsys.readouterr().out.splitlines()[-1]  # the audit log's own stream
    assert "event=admin_user_created" in audit_line and "user=alice admin=cli:" in audit_line
    assert "alice-password" not in created.output + audit_line
    tokens = login(app, "alice", "alice-password").get_json()
    login(app, "alice", "alice-password")

    shown = users("show", "alice")
    assert shown.exit_code == 0
    assert "username: alice" in shown.output and "disabled: no" in shown.output
    assert "sessions: 2" in shown.output

    assert users("create", "bob", "--password", "bob-password").exit_code == 0
    listed = users("list", "--limit", "1")
    assert listed.exit_code == 0
    assert sorted(listed.output.split()) == ["alice", "bob"]

    sid = (
        app.test_client()
        .get("/user/sessions", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
        .get_json()["sessions"][0]["id"]
    )
    one = users("end-sessions", "alice", "--session", sid)
    assert one.exit_code == 0 and f"Ended session {sid}" in one.output
    again = users("end-sessions", "alice", "--session", sid)
    assert again.exit_code == 1 and "No such session." in again.output
    every = users("end-sessions", "alice")
    assert every.exit_code == 0 and "Ended 1 session(s)" in every.output

    disabled = users("disable", "alice")
    assert disabled.exit_code == 0 and "Disabled 'alice'" in disabled.output
    assert login(app, "alice", "alice-password").status_code == 403
    assert users("enable", "alice").exit_code == 0
    assert login(app, "alice", "alice-password").status_code == 200

    reset = users("set-password", "alice", input="alice-password-2\nalice-password-2\n")
    assert reset.exit_code == 0 and "ended 1 session(s)" in reset.output
    assert login(app, "alice", "alice-password-2").status_code == 200
    assert "alice-password-2" not in reset.output.replace("New password", "")

    for _ in range(3):
        login(app, "alice", "wrong-password")
    assert fake_redis.keys("jwt:{alice}:login-failures:*")
    assert users("unlock", "alice").exit_code == 0
    assert fake_redis.keys("jwt:{alice}:login-failures:*") == []

    refused = users("delete", "alice", input="n\n")
    assert refused.exit_code == 1 and fake_redis.exists("jwt:{alice}:user")
    deleted = users("delete", "alice", "--yes")
    assert deleted.exit_code == 0 and "Deleted 'alice'." in deleted.output
    assert fake_redis.keys("jwt:{alice}*") == []


@pytest.mark.parametrize(
    "args",
    [
        ["show", "nobody"],
        ["end-sessions", "nobody"],
        ["end-sessions", "nobody", "--session", "x"],
        ["disable", "nobody"],
        ["enable", "nobody"],
        ["unlock", "nobody"],
        ["set-password", "nobody", "--password", "long-enough-1"],
        ["delete", "nobody", "--yes"],
        ["show", "bad name!"],
    ],
)
def test_users_commands_say_an_unknown_user_in_one_line(fake_redis, args):
    _, runner = users_runner(fake_redis)
    result = runner.invoke(args=["users", *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: No such user."]


def test_users_commands_refuse_bad_passwords_before_changing_anything(fake_redis):
    app, runner = users_runner(fake_redis)
    runner.invoke(args=["users", "create", "alice", "--password", "alice-password"])
    tokens = login(app, "alice", "alice-password").get_json()
    short = runner.invoke(args=["users", "set-password", "alice", "--password", "short"])
    assert short.exit_code == 1 and len(short.output.strip().splitlines()) == 1
    assert "8-128" in short.output
    welcome = app.test_client().get(
        "/user/welcome", headers={"Authorization": f"Bearer {tokens['accessToken']}"}
    )
    assert welcome.status_code == 200
    taken = runner.invoke(args=["users", "create", "alice", "--password", "other-password"])
    assert taken.exit_code == 1 and "already exists" in taken.output


def test_users_commands_answer_an_unreachable_redis_in_one_line():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    _, runner = users_runner(client)
    server.connected = False
    for args in (["list"], ["show", "alice"], ["disable", "alice"], ["delete", "alice", "--yes"]):
        result = runner.invoke(args=["users", *args])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "did not answer (ConnectionError)" in lines[0], result.output


def test_users_commands_work_on_a_cluster(cluster_redis):
    app, runner = users_runner(cluster_redis)
    for number in range(30):
        name = f"user-{number:02d}"
        assert (
            runner.invoke(args=["users", "create", name, "--password", "long-enough-1"]).exit_code
            == 0
        )
    listed = runner.invoke(args=["users", "list", "--limit", "7"])
    names = [line for line in listed.output.splitlines() if not line.startswith("ts=")]
    assert sorted(names) == [f"user-{number:02d}" for number in range(30)]
    login(app, "user-03", "long-enough-1")
    assert runner.invoke(args=["users", "delete", "user-03", "--yes"]).exit_code == 0
    assert cluster_redis.keys("jwt:{user-03}*") == []
