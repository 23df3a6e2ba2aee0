"""Input rules for usernames and passwords (SPEC: 3-32 of A-Z a-z 0-9 _ . -; 8-128 chars)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from utils.errors import BadRequest

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128


def read_credentials(fields: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(username, password)`` from a form or JSON object, or raise BadRequest."""
    username = fields.get("username")
    password = fields.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadRequest("Fields 'username' and 'password' are required strings.")
    if not USERNAME_PATTERN.fullmatch(username):
        raise BadRequest("The username must be 3-32 characters of A-Z a-z 0-9 _ . -")
    if not password or len(password) > MAX_PASSWORD_LENGTH or not _is_encodable(password):
        raise BadRequest(f"The password must be 1-{MAX_PASSWORD_LENGTH} characters of UTF-8 text.")
    return username, password


def read_password_change(fields: Mapping[str, Any]) -> tuple[str, str]:
    """``(password, newPassword)`` from a form or JSON object; the new one must meet the
    register rules. Raises BadRequest."""
    password = fields.get("password")
    new_password = fields.get("newPassword")
    if not isinstance(password, str) or not isinstance(new_password, str):
        raise BadRequest("Fields 'password' and 'newPassword' are required strings.")
    for value in (password, new_password):
        if not value or len(value) > MAX_PASSWORD_LENGTH or not _is_encodable(value):
            raise BadRequest(
                f"A password must be 1-{MAX_PASSWORD_LENGTH} characters of UTF-8 text."
            )
    check_new_password(new_password)
    return password, new_password


def read_new_password(fields: Mapping[str, Any]) -> str:
    """``newPassword`` from a form or JSON object, by the register rules (an operator setting a
    password). Raises BadRequest."""
    new_password = fields.get("newPassword")
    if (
        not isinstance(new_password, str)
        or len(new_password) > MAX_PASSWORD_LENGTH
        or not _is_encodable(new_password)
    ):
        raise BadRequest(
            f"Field 'newPassword' is required: {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} "
            "characters of UTF-8 text."
        )
    check_new_password(new_password)
    return new_password


def check_new_password(password: str) -> None:
    """Registration's stricter rule: at least 8 characters (demo users are exempt)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(
            f"The password must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters."
        )


def _is_encodable(text: str) -> bool:
    """JSON may carry lone surrogates, which no hash function can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
