"""The command line: ``flask --app main create-user NAME``, ``generate-keys FILE`` and the
``users`` group (SPEC "Administration": list, show, create, end-sessions, disable, enable,
unlock, set-password, delete), which runs the same operations as ``/admin/users``
(utils/admin.py) for whoever can reach Redis.

Locally, ``flask --app devtools.local …`` runs the same commands against the Redis that
``./run.sh --local`` is using, without any key configuration. Every failure is one line.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
from flask import Flask
from flask.cli import AppGroup
from redis import RedisError

from initialize.config import ASYMMETRIC_ALGORITHMS
from utils import admin
from utils.errors import ApiError
from utils.keys import generate_private_key_pem
from utils.keys import public_key_pem
from utils.redis import RedisStore
from utils.redis_connection import NotReplicated
from utils.state import get_store
from utils.users import USERNAME_PATTERN
from utils.users import check_new_password
from utils.users import read_credentials
from utils.users import read_new_password

PAGE = 1000
Result = TypeVar("Result")


def register_cli(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""
    register_users_cli(app)

    @app.cli.command("create-user")
    @click.argument("username")
    @click.option("--password", help="For scripts; prompted (hidden, twice) when not given.")
    def create_user(username: str, password: str | None) -> None:
        """Create USERNAME; the password follows the same rules as /public/register.

        The username is checked (its form, then whether it is free in Redis) before the
        password is asked for, so a typo or an unreachable Redis costs no typing.
        """
        create_account(username, password)

    @app.cli.command("generate-keys")
    @click.option(
        "--algorithm",
        type=click.Choice(ASYMMETRIC_ALGORITHMS),
        default="ES256",
        show_default=True,
    )
    @click.argument("private_key_file", type=click.Path(dir_okay=False, path_type=Path))
    def generate_keys(algorithm: str, private_key_file: Path) -> None:
        """Write a new key pair: PRIVATE_KEY_FILE (mode 600) and PRIVATE_KEY_FILE.pub.

        Point JWT_PRIVATE_KEY_FILE at the new file; to rotate, list the old public key in
        JWT_PREVIOUS_PUBLIC_KEY_FILES until the tokens it signed have expired.
        """
        public_key_file = private_key_file.with_name(private_key_file.name + ".pub")
        if private_key_file.exists() or public_key_file.exists():
            raise click.ClickException(f"{private_key_file} or its .pub exists; not overwriting.")
        private_pem = generate_private_key_pem(algorithm)
        private_key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as sink:
            sink.write(private_pem)
        public_key_file.write_bytes(public_key_pem(private_pem))
        click.echo(f"Wrote {private_key_file} (private, mode 600) and {public_key_file}.")


def create_account(username: str, password: str | None) -> None:
    """``create-user`` and ``users create``: the username is checked (its form, then whether it
    is free in Redis) before the password is asked for, so a typo or an unreachable Redis
    costs no typing."""
    store = get_store()
    check_username(username)
    with redis_errors_in_one_line(store):
        if store.user_exists(username):
            raise click.ClickException(f"User {username!r} already exists.")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        read_credentials({"username": username, "password": password})
        check_new_password(password)
    except ApiError as error:
        raise click.ClickException(error.message) from None
    run(admin.create_user, {"username": username, "password": password}, cli_admin())
    click.echo(f"Created user {username!r}.")


def register_users_cli(app: Flask) -> None:
    """``flask users …``: one command per operation of utils/admin.py."""
    users = AppGroup("users", help="Administer accounts (as /admin/users does).")

    @users.command("list")
    @click.option("--limit", type=click.IntRange(1, PAGE), default=PAGE, help="Names per page.")
    def list_users(limit: int) -> None:
        """Print every account name, one a line (a page at a time, never all at once)."""
        cursor = None
        while True:
            names, following = run(admin.list_users, cursor, limit)
            for name in names:
                click.echo(name)
            if following is None:
                return
            cursor, _ = admin.read_page(following, None)

    @users.command("show")
    @click.argument("username")
    def show(username: str) -> None:
        """Print the account, whether it is disabled, and its live sessions."""
        view = run(admin.show_user, username)
        click.echo(f"username: {view.username}")
        click.echo(f"created: {view.created_at}")
        click.echo(f"disabled: {'yes' if view.disabled else 'no'}")
        click.echo(f"sessions: {len(view.sessions)}")
        for session in view.sessions:
            click.echo(
                f"  {session.id} created {session.created_at} refreshed {session.refreshed_at} "
                f"expires {session.expires_at} from {session.client_address or '-'} "
                f"{session.user_agent!r}"
            )

    @users.command("create")
    @click.argument("username")
    @click.option("--password", help="For scripts; prompted (hidden, twice) when not given.")
    def create(username: str, password: str | None) -> None:
        """Create USERNAME; the password follows the same rules as /public/register."""
        create_account(username, password)

    @users.command("end-sessions")
    @click.argument("username")
    @click.option("--session", "session_id", help="End only this session (an id from show).")
    def end_sessions(username: str, session_id: str | None) -> None:
        """End every session of USERNAME at once (or one, with --session)."""
        if session_id is not None:
            run(admin.end_session, username, session_id, cli_admin())
            click.echo(f"Ended session {session_id} of {username!r}.")
            return
        ended = run(admin.end_sessions, username, cli_admin())
        click.echo(f"Ended {ended} session(s) of {username!r}.")

    @users.command("disable")
    @click.argument("username")
    def disable(username: str) -> None:
        """End every session of USERNAME and refuse its logins (403) until enabled."""
        ended = run(admin.disable, username, cli_admin())
        click.echo(f"Disabled {username!r}; ended {ended} session(s).")

    @users.command("enable")
    @click.argument("username")
    def enable(username: str) -> None:
        """Let USERNAME log in again."""
        run(admin.enable, username, cli_admin())
        click.echo(f"Enabled {username!r}.")

    @users.command("unlock")
    @click.argument("username")
    def unlock(username: str) -> None:
        """Clear USERNAME's failed-login counts (every address)."""
        run(admin.unlock, username, cli_admin())
        click.echo(f"Unlocked {username!r}.")

    @users.command("set-password")
    @click.argument("username")
    @click.option("--password", help="For scripts; prompted (hidden, twice) when not given.")
    def set_password(username: str, password: str | None) -> None:
        """Set USERNAME's password (register rules); every session of the user ends."""
        run(admin.show_user, username)  # an unknown user costs no typing
        if password is None:
            password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
        try:
            read_new_password({"newPassword": password})
        except ApiError as error:
            raise click.ClickException(error.message) from None
        ended = run(admin.set_password, username, {"newPassword": password}, cli_admin())
        click.echo(f"Set the password of {username!r}; ended {ended} session(s).")

    @users.command("delete")
    @click.argument("username")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def delete(username: str, yes: bool) -> None:
        """Remove USERNAME, its sessions, tokens and counts (the name is free again)."""
        if not yes:
            click.confirm(f"Delete {username!r} and everything it left in Redis?", abort=True)
        run(admin.delete, username, cli_admin())
        click.echo(f"Deleted {username!r}.")

    app.cli.add_command(users)


def run(operation: Callable[..., Result], *args: object) -> Result:
    """Run an operation of utils/admin.py; its refusal or Redis's failure is one line."""
    with redis_errors_in_one_line(get_store()):
        try:
            return operation(*args)
        except ApiError as error:
            raise click.ClickException(error.message) from None


def cli_admin() -> str:
    """Who acted, for the audit line: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in a bare container
        return f"cli:uid-{os.getuid()}"


def check_username(username: str) -> None:
    """The register rule for usernames, as a one-line command-line error."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise click.ClickException("The username must be 3-32 characters of A-Z a-z 0-9 _ . -")


@contextmanager
def redis_errors_in_one_line(store: RedisStore) -> Iterator[None]:
    """A Redis failure becomes one line naming the server (its password hidden), no traceback."""
    try:
        yield
    except NotReplicated as error:
        raise click.ClickException(
            f"Redis made the change, but {error} in time (REDIS_WAIT_TIMEOUT_MS): a failover "
            "now could lose it; run the command again once the replicas catch up"
        ) from None
    except RedisError as error:
        pool = getattr(store.redis.client, "connection_pool", None)  # a cluster client has none
        kwargs = pool.connection_kwargs if pool is not None else {}
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        raise click.ClickException(
            f"Redis at {where} did not answer ({type(error).__name__}): is it running, and is "
            "REDIS_URL right? (for ./run.sh --local: flask --app devtools.local ...)"
        ) from None
