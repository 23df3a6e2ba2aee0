"""The command line: ``flask --app main create-user NAME`` and ``generate-keys FILE``.

Locally, ``flask --app devtools.local …`` runs the same commands against the Redis that
``./run.sh --local`` is using, without any key configuration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask
from redis import RedisError

from initialize.config import ASYMMETRIC_ALGORITHMS
from utils.errors import ApiError
from utils.keys import generate_private_key_pem
from utils.keys import public_key_pem
from utils.passwords import hash_password
from utils.redis import NotReplicated
from utils.redis import RedisStore
from utils.state import get_store
from utils.users import USERNAME_PATTERN
from utils.users import check_new_password
from utils.users import read_credentials


def register_cli(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""

    @app.cli.command("create-user")
    @click.argument("username")
    @click.option("--password", help="For scripts; prompted (hidden, twice) when not given.")
    def create_user(username: str, password: str | None) -> None:
        """Create USERNAME; the password follows the same rules as /public/register.

        The username is checked (its form, then whether it is free in Redis) before the
        password is asked for, so a typo or an unreachable Redis costs no typing.
        """
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
        with redis_errors_in_one_line(store):
            created = store.create_user(username, hash_password(password))
        if not created:
            raise click.ClickException(f"User {username!r} already exists.")
        click.echo(f"Created user {username!r}.")

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
        kwargs = store.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        raise click.ClickException(
            f"Redis at {where} did not answer ({type(error).__name__}): is it running, and is "
            "REDIS_URL right? (for ./run.sh --local: flask --app devtools.local ...)"
        ) from None
