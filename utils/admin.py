"""Account administration (SPEC "Administration"): the one implementation of each operation.

The ``/admin/users`` routes (api/v1/admin.py) and the ``flask users`` commands
(initialize/cli.py) are two front doors to these functions: both validate, change Redis and
audit through here, and only the shape of the answer differs. ``admin`` is who acted: an
``ADMIN_CLIENTS`` id over HTTP, ``cli:<login>`` on the command line. Every change is audited
with ``admin`` and ``user`` (:func:`_changed`), and every write the store makes for one waits
for Redis's replicas (``RedisStore.run_durably``, SPEC "Durable changes"): too few in time is
``NotReplicated``, a 503 over HTTP and one line on the command line; repeating is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from utils import audit
from utils.errors import BadRequest
from utils.errors import Conflict
from utils.errors import NotFound
from utils.passwords import hash_password
from utils.redis import AccountsCursor
from utils.redis import EveryChange
from utils.redis import Session
from utils.state import get_store
from utils.users import USERNAME_PATTERN
from utils.users import check_new_password
from utils.users import read_credentials
from utils.users import read_new_password

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class UserView:
    """What ``GET /admin/users/<name>`` and ``flask users show`` tell about an account."""

    username: str
    created_at: int
    disabled: bool
    sessions: list[Session]


def read_page(cursor: str | None, limit: str | None) -> tuple[AccountsCursor | None, int]:
    """The listing's ``cursor`` (empty: the start) and ``limit`` (1-1000, default 100), from
    query text; BadRequest for anything else."""
    page = DEFAULT_PAGE
    if limit is not None and limit != "":
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 4) or not (
            1 <= int(limit) <= MAX_PAGE
        ):
            raise BadRequest(f"The limit must be an integer from 1 to {MAX_PAGE}.")
        page = int(limit)
    if not cursor:
        return None, page
    decoded = AccountsCursor.decode(cursor)
    if decoded is None:
        raise BadRequest("The cursor is not one this service gave (use 'next' as it is).")
    return decoded, page


def list_users(cursor: AccountsCursor | None, limit: int) -> tuple[list[str], str | None]:
    """A page of account names and the cursor of the next page (None after the last)."""
    names, following = get_store().list_accounts(cursor, limit)
    return names, None if following is None else following.encode()


def show_user(username: str) -> UserView:
    """The account and its live sessions; NotFound when there is none."""
    store = get_store()
    account = store.account(_known_form(username))
    if account is None:
        raise _no_such_user()
    return UserView(username, account.created_at, account.disabled, store.list_sessions(username))


def create_user(fields: Mapping[str, Any], admin: str) -> str:
    """Create an account from ``username`` and ``password`` by the register rules; Conflict
    when the name is taken. Returns the username."""
    username, password = read_credentials(fields)
    check_new_password(password)
    if not get_store().create_user(username, hash_password(password)):
        raise Conflict("That username is taken.")
    _changed(audit.ADMIN_USER_CREATED, username, admin)
    return username


def end_sessions(username: str, admin: str) -> int:
    """End every session of the user at once; returns how many were live."""
    ended = _every_session(username, EveryChange.NOTHING)
    _changed(audit.ADMIN_SESSIONS_ENDED, username, admin)
    return ended


def end_session(username: str, session_id: str, admin: str) -> None:
    """End one live session of the user; NotFound when it is not one (or no such user)."""
    _require_account(username)
    if not get_store().end_own_session(username, session_id):
        raise NotFound("No such session.")
    _changed(audit.ADMIN_SESSION_ENDED, username, admin, session_id)


def disable(username: str, admin: str) -> int:
    """Mark the account disabled and end every session in one step; from then on a correct
    password gets 403. Returns how many sessions were live."""
    ended = _every_session(username, EveryChange.DISABLE)
    _changed(audit.USER_DISABLED, username, admin)
    return ended


def enable(username: str, admin: str) -> None:
    """Lift the disabled mark."""
    if not get_store().enable_account(_known_form(username)):
        raise _no_such_user()
    _changed(audit.USER_ENABLED, username, admin)


def unlock(username: str, admin: str) -> None:
    """Start the user's failed-login counts (every address) again from zero."""
    _require_account(username)
    get_store().clear_login_failures(username)
    _changed(audit.USER_UNLOCKED, username, admin)


def set_password(username: str, fields: Mapping[str, Any], admin: str) -> int:
    """Store ``newPassword`` (register rules) and end every session; returns how many were
    live."""
    _require_account(username)  # before the slow hash
    new_password = read_new_password(fields)
    ended = _every_session(username, EveryChange.SET_PASSWORD, hash_password(new_password))
    _changed(audit.ADMIN_PASSWORD_SET, username, admin)
    return ended


def delete(username: str, admin: str) -> None:
    """Remove the account, its sessions, tokens and counts; the name is free again."""
    if not get_store().delete_account(_known_form(username)):
        raise _no_such_user()
    _changed(audit.USER_DELETED, username, admin)


def _every_session(username: str, change: EveryChange, password_hash: str = "") -> int:
    ended = get_store().end_every_session(_known_form(username), change, password_hash)
    if ended < 0:
        raise _no_such_user()
    return ended


def _known_form(username: str) -> str:
    """``username`` when it could name an account; NotFound otherwise (no account can have
    such a name, and it never reaches Redis)."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise _no_such_user()
    return username


def _require_account(username: str) -> None:
    """NotFound unless ``username`` names an existing account."""
    if not get_store().user_exists(_known_form(username)):
        raise _no_such_user()


def _no_such_user() -> NotFound:
    return NotFound("No such user.")


def _changed(event: str, username: str, admin: str, session_id: str | None = None) -> None:
    """After every change: the audit line with ``admin`` and its count (the store has already
    waited for the replicas)."""
    audit.audit(event, username, session_id, admin=admin)
