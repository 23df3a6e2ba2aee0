"""``flask --app main create-user NAME``: add an account with a prompted password."""

from __future__ import annotations

import click
from flask import Flask

from global_state import get_store
from utils.errors import ApiError
from utils.passwords import hash_password
from utils.users import check_new_password
from utils.users import read_credentials


def register_cli(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""

    @app.cli.command("create-user")
    @click.argument("username")
    @click.password_option(help="Prompted (hidden, twice) when not given.")
    def create_user(username: str, password: str) -> None:
        """Create USERNAME; the password follows the same rules as /public/register."""
        try:
            read_credentials({"username": username, "password": password})
            check_new_password(password)
        except ApiError as error:
            raise click.ClickException(error.message) from None
        if not get_store().create_user(username, hash_password(password)):
            raise click.ClickException(f"User {username!r} already exists.")
        click.echo(f"Created user {username!r}.")
