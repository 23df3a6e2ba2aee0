"""The store: the token allowlist, sessions, login attempts and user accounts, as operations on
Redis (:class:`RedisStore`) and the types of their results.

Its keys are named by utils/redis_keys.py (what each holds and how long it lives), each change
is one Lua script of utils/redis_scripts.py, and utils/redis_connection.py sends the commands
(the client, one resend after a broken connection, waiting for the replicas).

The account version is how a change to an account ends every session issued before it, with no
gap for a login in flight: a login reads the version with the password hash, and the script
that records its session refuses when the version has moved since; each session remembers the
version it was issued under (``session-meta``'s ``version``) and a refresh refuses, ending the
session, when the account's has moved on.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

import redis
from redis.cluster import RedisCluster

from utils import redis_scripts as scripts
from utils.allowlist_cache import AllowlistCache
from utils.net import Caller
from utils.redis_connection import CLUSTER_SLOTS
from utils.redis_connection import Client
from utils.redis_connection import NotReplicated
from utils.redis_connection import RedisConnection
from utils.redis_keys import KeyLayout
from utils.redis_keys import glob_escape
from utils.redis_scripts import Script
from utils.tokens import TokenPair


class Rotation(enum.Enum):
    """What happened to a presented refresh token."""

    ROTATED = 1
    REUSED_IN_GRACE = 2  # presented again within REFRESH_REUSE_GRACE_SECONDS: a new pair
    REUSED = -1
    REVOKED = 0


UNKNOWN_CALLER = Caller("", "")
DEFAULT_MAX_SESSIONS = 100
# Keys SCAN looks at per call when listing accounts: about a millisecond of Redis's time, so
# other clients wait little.
SCAN_COUNT = 1000
# ... and when looking for one user's keys outside a cluster (a rare operator's action over the
# whole keyspace: fewer, longer calls, a few milliseconds each).
SWEEP_COUNT = 10_000
# SCAN calls one page of accounts may take (a page can come back short when most keys are not
# accounts; ``next`` goes on from there).
MAX_SCANS_PER_PAGE = 100


class EveryChange(enum.Enum):
    """What :meth:`RedisStore.end_every_session` does to the account besides ending sessions."""

    NOTHING = enum.auto()
    DISABLE = enum.auto()
    SET_PASSWORD = enum.auto()
    DELETE = enum.auto()


class AccountsCursor(NamedTuple):
    """Where a listing of accounts goes on: the first slot of the Redis node being scanned (0
    outside a cluster), its SCAN cursor, and the last name already listed from that cursor's
    batch when a page ended inside it."""

    node_slot: int
    scan_cursor: int
    after: str = ""

    def encode(self) -> str:
        """The opaque ``next`` string of ``GET /admin/users``."""
        text = f"{self.node_slot}-{self.scan_cursor}"
        return f"{text}-{self.after}" if self.after else text

    @classmethod
    def decode(cls, text: str) -> AccountsCursor | None:
        """The cursor :meth:`encode` made, or None for anything else."""
        match = _CURSOR_PATTERN.fullmatch(text)
        if match is None or int(match[1]) >= CLUSTER_SLOTS or int(match[2]) >= 2**64:
            return None
        return cls(int(match[1]), int(match[2]), match[3] or "")


_CURSOR_PATTERN = re.compile(r"(\d{1,5})-(\d{1,20})(?:-([A-Za-z0-9_.-]{3,32}))?")


@dataclass(frozen=True)
class Account:
    """What the account record says (sessions are read separately)."""

    created_at: int
    disabled: bool


@dataclass(frozen=True)
class Session:
    """One live session of a user (a login and the refreshes that followed it)."""

    id: str
    created_at: int
    refreshed_at: int
    expires_at: int
    client_address: str
    user_agent: str


@dataclass(frozen=True)
class LoginAttempt:
    """The attempt's number in the current window from this address and from all (with their
    seconds left), the stored hash, the account version read with it (pass it to
    :meth:`RedisStore.record_tokens`), and whether an operator disabled the account."""

    attempts: int
    retry_after: int
    account_attempts: int
    account_retry_after: int
    password_hash: str | None
    account_version: int
    disabled: bool = False


class AccountBusy(redis.RedisError):
    """Logins kept recording sessions while an account change read them: nothing changed, and
    repeating the change is safe (a RedisError, so the answer is a 503 with Retry-After)."""


ACCOUNT_GONE = -1
VERSION_MOVED = -2
_SESSIONS_MOVED = -3
_CHANGE_ACCOUNT_TRIES = 5


class RedisStore:
    """All of the service's Redis reads and writes, bound to one client and key prefix.

    ``client`` and the ``wait_*`` settings go to its :class:`RedisConnection` (``self.redis``);
    ``prefix`` to its :class:`KeyLayout` (``self.layout``).
    """

    def __init__(
        self,
        client: Client | Callable[[], Client],
        prefix: str,
        allowlist_cache: AllowlistCache | None = None,
        *,
        clock: Callable[[], float] = time.time,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self.redis = RedisConnection(
            client, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms
        )
        self.prefix = prefix
        self.layout = KeyLayout(prefix)
        self._allowlist_cache = allowlist_cache
        self._clock = clock  # tests pass a fixed one (many logins inside one second)

    def close(self) -> None:
        """Stop the allowlist cache and close the connections (:meth:`RedisConnection.close`)."""
        if self._allowlist_cache is not None:
            self._allowlist_cache.close()
        self.redis.close()

    def run_durably(
        self, username: str, script: Script, keys: list[str], args: list[str | int]
    ) -> Any:
        """Run a change of ``username``'s keys and wait for the replicas to hold it, the user's
        ``replicated`` key as the awaited write (:meth:`RedisConnection.run_durably`)."""
        return self.redis.run_durably(self.layout.key(username, "replicated"), script, keys, args)

    def _now(self) -> int:
        return int(self._clock())

    def _pair_args(self, pair: TokenPair, caller: Caller) -> list[str | int]:
        return [
            pair.username,
            pair.session_id,
            self._now(),
            pair.access_jti,
            pair.access_exp,
            pair.refresh_jti,
            pair.refresh_exp,
            caller.address,
            caller.user_agent,
        ]

    def record_tokens(
        self,
        pair: TokenPair,
        caller: Caller = UNKNOWN_CALLER,
        *,
        account_version: int,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        reset_failures: bool = False,
    ) -> bool:
        """Allowlist a login's pair in a new session, unless the account changed (or went)
        since ``account_version`` was read with the password hash: then False, nothing is
        recorded, and no session issued against a replaced password or a disabled account
        can survive the change. With ``reset_failures``, also clear the user's failure
        counters (the caller's address's and the account's: a success resets them). Beyond
        ``max_sessions``, the user's least recently issued sessions end (one more round trip,
        only then)."""
        keys = self.layout.pair_keys(pair)
        if reset_failures:
            keys += self.layout.failure_keys(pair.username, caller.address)
        args = [*self._pair_args(pair, caller), account_version, max_sessions]
        recorded, *beyond = self.redis.run(scripts.ISSUE, keys, args)
        if beyond:
            self._end_sessions(pair.username, beyond)
        return bool(recorded)

    def is_token_active(self, username: str, session_id: str, jti: str) -> bool:
        """The allowlist check, paid on every authenticated request: one EXISTS of the token's
        record and its session's (ending a session deletes the latter), unless the allowlist
        cache (utils/allowlist_cache.py) knows both exist and Redis has reported no change."""
        user = f"{self.prefix}{{{username}}}:"  # self.layout.key(), inlined on the hot path
        token_key, session_key = user + "token:" + jti, user + "session:" + session_id
        cache = self._allowlist_cache
        generation = None if cache is None else cache.current()
        if generation is not None and cache.holds(token_key, session_key):
            return True
        active = self.redis.command("EXISTS", token_key, session_key) == 2
        if active and generation is not None:
            cache.remember(token_key, session_key, generation)
        return active

    def rotate_refresh_token(
        self,
        old_jti: str,
        old_exp: int,
        new_pair: TokenPair,
        caller: Caller = UNKNOWN_CALLER,
        *,
        reuse_grace_seconds: int = 0,
    ) -> Rotation:
        """Spend ``old_jti`` and record ``new_pair``; on reuse, end the whole session instead
        (unless the reuse comes within ``reuse_grace_seconds`` of the spending). A session
        issued under an older account version ends: REVOKED."""
        user = new_pair.username
        keys = self.layout.pair_keys(new_pair)
        keys += [self.layout.key(user, "token", old_jti), self.layout.key(user, "spent", old_jti)]
        args = [*self._pair_args(new_pair, caller), old_jti, old_exp, reuse_grace_seconds]
        return Rotation(int(self.redis.run(scripts.ROTATE, keys, args)))

    def end_session(self, username: str, session_id: str) -> int:
        """Revoke every token of one session (durably: :meth:`run_durably`); returns how many
        records were in it."""
        keys = self.layout.session_keys(username, [session_id])
        return int(self.run_durably(username, scripts.END_SESSIONS, keys, [session_id]))

    def end_own_session(self, username: str, session_id: str) -> bool:
        """As :meth:`end_session`, only if ``session_id`` is a live session of ``username``
        (a 404 waits too: after an unconfirmed end, its repeat finds the session gone)."""
        keys = self.layout.session_keys(username, [session_id])
        args = [session_id, self._now()]
        return bool(self.run_durably(username, scripts.END_OWN_SESSION, keys, args))

    def end_all_sessions(self, username: str) -> int:
        """Revoke every token of every session of ``username``, durably; returns the session
        count.

        Two round trips: the script must be given each session's key, so the session ids are
        read first. A session a concurrent login starts in between lives on, as if that login
        had come just after this call.
        """
        session_ids = self.redis.command("ZRANGE", self.layout.key(username, "sessions"), 0, -1)
        keys = self.layout.session_keys(username, session_ids)
        self.run_durably(username, scripts.END_SESSIONS, keys, session_ids)
        return len(session_ids)

    def list_sessions(self, username: str) -> list[Session]:
        """The user's live sessions, newest first: their ids, then their records (two round
        trips, read only)."""
        live = self.redis.command(
            "ZRANGE", self.layout.key(username, "sessions"), f"({self._now()}", "+inf", "BYSCORE"
        )
        if not live:
            return []
        keys = [self.layout.key(username, "session-meta", sid) for sid in live]
        records = self.redis.run(scripts.READ_SESSIONS, keys, [])
        sessions = [
            _session(sid, _pairs(flat)) for sid, flat in zip(live, records, strict=True) if flat
        ]
        return sorted(sessions, key=lambda session: session.created_at, reverse=True)

    def change_password(
        self,
        username: str,
        password_hash: str,
        keep_session: str,
        caller: Caller,
        *,
        account_version: int,
    ) -> int:
        """Store a new hash, clear the caller's failure counters and end every other session of
        the user, if the account is still at ``account_version`` (read when the current
        password was checked); see :meth:`change_account`."""
        return self.change_account(
            username,
            {"password": password_hash},
            keep_session=keep_session,
            if_version=account_version,
            clear=self.layout.failure_keys(username, caller.address),
        )

    def change_account(
        self,
        username: str,
        fields: Mapping[str, str],
        *,
        keep_session: str | None = None,
        if_version: int | None = None,
        clear: Sequence[str] = (),
    ) -> int:
        """Set ``fields`` on the account, move its version on and end every session but
        ``keep_session``, in one script; delete the ``clear`` keys (the user's counters).

        The way to make a change that must end the sessions issued before it (a new password,
        disabling the account): a login that read the old version cannot record its session
        after this, a refresh of a session from before it ends that session, and a login
        recorded between reading the session ids and the script makes the script change
        nothing and the ids be read again. Made durably (:meth:`run_durably`). Returns how
        many live sessions ended;
        ``ACCOUNT_GONE`` when there is no account, ``VERSION_MOVED`` when ``if_version`` is
        given and the account is at another; raises :class:`AccountBusy` when logins keep
        arriving faster than a few tries.
        """
        pairs = [item for field_value in fields.items() for item in field_value]
        expected = "" if if_version is None else str(if_version)
        for _ in range(_CHANGE_ACCOUNT_TRIES):
            others = [
                sid
                for sid in self.redis.command(
                    "ZRANGE", self.layout.key(username, "sessions"), 0, -1
                )
                if sid != keep_session
            ]
            sessions, order, *ended = self.layout.session_keys(username, others)
            kept_meta = self.layout.key(username, "session-meta", keep_session or "")
            keys = [self.layout.key(username, "user"), sessions, order, kept_meta, *ended, *clear]
            args = [self._now(), keep_session or "", expected, len(fields), len(others)]
            outcome = int(
                self.run_durably(username, scripts.CHANGE_ACCOUNT, keys, [*args, *pairs, *others])
            )
            if outcome != _SESSIONS_MOVED:
                return outcome
        raise AccountBusy(f"sessions kept changing while the account of {username!r} changed")

    def _end_sessions(self, username: str, session_ids: list[str]) -> int:
        keys = self.layout.session_keys(username, session_ids)
        return int(self.redis.run(scripts.END_SESSIONS, keys, session_ids))

    def begin_login(self, username: str, address: str, lock_seconds: int) -> LoginAttempt:
        """Count this attempt (per address and per account) and fetch the password hash: one
        script, one round trip.

        (A resend after a broken connection may count one attempt twice: the safe side.)
        """
        keys = [*self.layout.failure_keys(username, address), self.layout.key(username, "user")]
        (
            attempts,
            retry_after,
            account_attempts,
            account_retry_after,
            password_hash,
            version,
            disabled,
        ) = self.redis.run(scripts.BEGIN_LOGIN, keys, [lock_seconds])
        if not password_hash:  # an adopted account is a new one: version 0
            password_hash = self._adopt_legacy_account(username)
        return LoginAttempt(
            int(attempts),
            int(retry_after),
            int(account_attempts),
            int(account_retry_after),
            password_hash or None,
            int(version),
            bool(disabled),
        )

    def count_registration(self, address: str, window_seconds: int) -> tuple[int, int]:
        """Count a registration attempted from ``address``: its number in the current window
        and the window's seconds left (one key in the address's own slot, one round trip)."""
        key = self.layout.registration_key(address)
        count, retry_after = self.redis.run(scripts.COUNT, [key], [window_seconds])
        return int(count), int(retry_after)

    def create_user(self, username: str, password_hash: str) -> bool:
        """Store a new account, durably (:meth:`run_durably`); False if the username is taken."""
        if self._adopt_legacy_account(username):
            return False
        keys, args = [self.layout.key(username, "user")], [password_hash, int(time.time())]
        return bool(self.run_durably(username, scripts.CREATE_USER, keys, args))

    def user_exists(self, username: str) -> bool:
        """Whether an account exists (used to seed demo users without re-hashing)."""
        exists = self.redis.command("EXISTS", self.layout.key(username, "user"))
        return bool(exists) or self._adopt_legacy_account(username) is not None

    def _create_user(self, username: str, password_hash: str, created: int | str) -> bool:
        keys = [self.layout.key(username, "user")]
        return bool(self.redis.run(scripts.CREATE_USER, keys, [password_hash, created]))

    def _adopt_legacy_account(self, username: str) -> str | None:
        """Move an account stored under the key name of earlier versions (``Puser:<name>``,
        another cluster slot, so two steps: copy if absent, then delete); its password hash,
        or None when there is none. Safe to run concurrently and to repeat."""
        legacy_key = self.layout.legacy_account_key(username)
        password_hash, created = self.redis.command("HMGET", legacy_key, "password", "created")
        if password_hash is None:
            return None
        self._create_user(username, password_hash, created or int(time.time()))
        self.redis.command("DEL", legacy_key)
        return self.redis.command("HGET", self.layout.key(username, "user"), "password")

    def account(self, username: str) -> Account | None:
        """The account's record, or None when there is none."""
        if not self.user_exists(username):
            return None
        account_key = self.layout.key(username, "user")
        created, disabled = self.redis.command("HMGET", account_key, "created", "disabled")
        return Account(int(created or 0), bool(disabled))

    def end_every_session(
        self, username: str, change: EveryChange = EveryChange.NOTHING, password_hash: str = ""
    ) -> int:
        """End every session of ``username`` at once and make ``change`` to the account in the
        same script (:meth:`change_account`: the version moves on, so a login in flight cannot
        record a session after it); returns how many live sessions ended, ACCOUNT_GONE when
        there is no account. DELETE removes the account itself in that script."""
        if change is not EveryChange.DELETE:
            self.user_exists(username)  # moves an account of an earlier version first
        fields, clear = {}, []
        if change is EveryChange.DISABLE:
            fields = {"disabled": "1"}
        elif change is EveryChange.SET_PASSWORD:
            fields = {"password": password_hash}
        elif change is EveryChange.DELETE:
            clear = [self.layout.key(username, "user"), self.layout.key(username, "session-order")]
        return self.change_account(username, fields, clear=clear)

    def enable_account(self, username: str) -> bool:
        """Lift ``disabled``; False when there is no account."""
        self.user_exists(username)
        return bool(
            self.run_durably(username, scripts.ENABLE, [self.layout.key(username, "user")], [])
        )

    def delete_account(self, username: str) -> bool:
        """Remove the account and every key of the user; False when there was no account.

        One script ends every session and removes the account (from then on no token of the
        user works and no login can record a session); then whatever else the user left (token
        records, spent markers, failure counters) is found and removed. Every step waits for
        the replicas; when they do not confirm the first (NotReplicated, a 503), the rest is
        removed all the same before the error goes on, and a repeat, which finds no account,
        waits for them too before it answers that there is none.
        """
        self.user_exists(username)  # moves an account of an earlier version first
        try:
            if self.end_every_session(username, EveryChange.DELETE) == ACCOUNT_GONE:
                return False
        except NotReplicated:
            self._delete_user_keys(username, "", durably=False)
            raise
        self._delete_user_keys(username, "", durably=True)
        return True

    def clear_login_failures(self, username: str) -> int:
        """Remove the user's failed-login counters, every address's and the account's, a batch
        per script, each waiting for the replicas (the first always runs: a repeat of an
        unconfirmed clear waits too); returns how many there were."""
        batches = [[self.layout.key(username, "account-failures")]]
        batches += self.user_keys(username, "login-failures:")  # one user's addresses
        return sum(
            int(self.run_durably(username, scripts.DELETE_KEYS, keys, [])) for keys in batches
        )

    def _delete_user_keys(self, username: str, kind: str, *, durably: bool) -> int:
        """Delete the keys :meth:`user_keys` finds, a batch per script; with ``durably``, at
        least one script runs (with no keys when none are found) and each waits."""
        if kind == "":
            self.redis.command(
                "DEL", self.layout.legacy_account_key(username)
            )  # an earlier version's key
        deleted, batches = 0, 0
        for keys in self.user_keys(username, kind):
            if durably:
                deleted += int(self.run_durably(username, scripts.DELETE_KEYS, keys, []))
            else:
                deleted += int(self.redis.run(scripts.DELETE_KEYS, keys, []))
            batches += 1
        if durably and not batches:
            self.run_durably(username, scripts.DELETE_KEYS, [], [])
        return deleted

    def user_keys(self, username: str, kind: str = "") -> Iterator[list[str]]:
        """Batches of the user's keys that start with ``P{username}:kind``: in a cluster, read
        from the keys of the user's one slot; else a SCAN of the whole keyspace (an operator's
        rare action; SWEEP_COUNT keys a call)."""
        start = self.layout.key(username, "") + kind
        client = self.redis.client
        if isinstance(client, RedisCluster):
            node = client.get_redis_connection(client.get_node_from_key(start))
            slot = client.keyslot(start)
            keys = node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 2**31 - 1)
            selected = [key for key in keys if key.startswith(start)]
            for first in range(0, len(selected), SCAN_COUNT):
                yield selected[first : first + SCAN_COUNT]
            return
        cursor = 0
        while True:
            cursor, keys = self.redis.command(
                "SCAN", cursor, "MATCH", glob_escape(start) + "*", "COUNT", SWEEP_COUNT
            )
            if keys:
                yield keys
            if int(cursor) == 0:
                return

    def list_accounts(
        self, cursor: AccountsCursor | None, limit: int
    ) -> tuple[list[str], AccountsCursor | None]:
        """A page of at most ``limit`` account names and where the next page starts (None at
        the end): SCAN of every node that holds keys (each primary of a cluster, in slot
        order), so no more than a page and one SCAN batch are ever in memory.

        An account that exists for the whole listing is listed (SCAN's guarantee); one created
        or deleted meanwhile may or may not be, and one may be listed twice.
        """
        nodes = self.redis.scan_nodes()
        if cursor is None:
            cursor = AccountsCursor(nodes[0][0], 0)
        index = next((i for i, (slot, _) in enumerate(nodes) if slot >= cursor.node_slot), None)
        if index is None:
            return [], None
        node_slot, scan = nodes[index]
        position, after = cursor.scan_cursor, cursor.after
        if node_slot != cursor.node_slot:  # the node layout changed: start that node over
            position, after = 0, ""
        match = self.layout.accounts_match()
        names: list[str] = []
        for _ in range(MAX_SCANS_PER_PAGE):
            following, keys = scan("SCAN", position, "MATCH", match, "COUNT", SCAN_COUNT)
            batch = sorted({name for key in keys if (name := self.layout.account_name(key))})
            if after:
                batch, after = [name for name in batch if name > after], ""
            room = limit - len(names)
            if len(batch) > room:
                names += batch[:room]
                return names, AccountsCursor(node_slot, position, names[-1])
            names += batch
            position = int(following)
            if position == 0:
                index += 1
                if index == len(nodes):
                    return names, None
                node_slot, scan = nodes[index]
            if len(names) == limit:
                break
        return names, AccountsCursor(node_slot, position)


def _pairs(flat: list[str]) -> dict[str, str]:
    """A flat ``[field, value, …]`` reply (HGETALL's, inside a script) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _session(session_id: str, fields: dict[str, str]) -> Session:
    return Session(
        id=session_id,
        created_at=int(fields.get("createdAt", 0)),
        refreshed_at=int(fields.get("refreshedAt", 0)),
        expires_at=int(fields.get("expiresAt", 0)),
        client_address=fields.get("clientAddress", ""),
        user_agent=fields.get("userAgent", ""),
    )
