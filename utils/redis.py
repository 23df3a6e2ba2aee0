"""The Redis side: the token allowlist, sessions, login attempts and user accounts.

Keys (all under the configured prefix; all but ``user:*`` carry a TTL):

* ``token:<jti>`` -> username, expiring exactly at the token's ``exp`` (the Go app's allowlist);
* ``spent:<jti>`` -> session id of a refresh token already used once (reuse detection);
* ``session:<sid>`` -> sorted set of the session's token jtis scored by ``exp``;
* ``user-sessions:<username>`` -> sorted set of the user's session ids scored by last ``exp``;
* ``login-failures:<username>:<address>`` -> attempt counter with the lock window as TTL;
* ``user:<username>`` -> hash with the Argon2id ``password`` hash and ``created`` time.

Every multi-key change is one Lua script, so it is atomic and costs one round trip.
"""

from __future__ import annotations

import enum
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

import redis

from utils.jwt import TokenPair


class Script(NamedTuple):
    """A Lua script and the SHA1 digest EVALSHA names it by."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        digest = hashlib.sha1(source.encode(), usedforsecurity=False)  # Redis's script name
        return cls(source, digest.hexdigest())


_LUA_HELPERS = """
local prefix = ARGV[1]
local function expire_no_earlier_than(key, at)
  if redis.call('EXPIRETIME', key) < at then redis.call('EXPIREAT', key, at) end
end
local function record_pair(username, sid, now, access_jti, access_exp, refresh_jti, refresh_exp)
  redis.call('SET', prefix .. 'token:' .. access_jti, username, 'EXAT', access_exp)
  redis.call('SET', prefix .. 'token:' .. refresh_jti, username, 'EXAT', refresh_exp)
  local latest = math.max(tonumber(access_exp), tonumber(refresh_exp))
  local session = prefix .. 'session:' .. sid
  redis.call('ZREMRANGEBYSCORE', session, '-inf', now)
  redis.call('ZADD', session, access_exp, access_jti, refresh_exp, refresh_jti)
  expire_no_earlier_than(session, latest)
  local sessions = prefix .. 'user-sessions:' .. username
  redis.call('ZREMRANGEBYSCORE', sessions, '-inf', now)
  redis.call('ZADD', sessions, latest, sid)
  expire_no_earlier_than(sessions, latest)
end
local function end_session(username, sid)
  local session = prefix .. 'session:' .. sid
  local jtis = redis.call('ZRANGE', session, 0, -1)
  for _, jti in ipairs(jtis) do redis.call('DEL', prefix .. 'token:' .. jti) end
  redis.call('DEL', session)
  redis.call('ZREM', prefix .. 'user-sessions:' .. username, sid)
  return #jtis
end
"""

# ARGV: prefix, username, sid, now, access jti, access exp, refresh jti, refresh exp, reset key
_ISSUE = Script.of(
    _LUA_HELPERS
    + """
record_pair(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if ARGV[9] ~= '' then redis.call('DEL', prefix .. ARGV[9]) end
return 1
"""
)

# ARGV: as _ISSUE's first eight, then the presented refresh token's jti and exp.
_ROTATE = Script.of(
    _LUA_HELPERS
    + """
local old_jti, old_exp = ARGV[9], ARGV[10]
if redis.call('DEL', prefix .. 'token:' .. old_jti) == 1 then
  redis.call('SET', prefix .. 'spent:' .. old_jti, ARGV[3], 'EXAT', old_exp)
  redis.call('ZREM', prefix .. 'session:' .. ARGV[3], old_jti)
  record_pair(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  return 1
end
if redis.call('EXISTS', prefix .. 'spent:' .. old_jti) == 1 then
  end_session(ARGV[2], ARGV[3])
  return -1
end
return 0
"""
)

# ARGV: prefix, username, sid
_END_SESSION = Script.of(
    _LUA_HELPERS
    + """
return end_session(ARGV[2], ARGV[3])
"""
)

# ARGV: prefix, username
_END_ALL_SESSIONS = Script.of(
    _LUA_HELPERS
    + """
local sessions = prefix .. 'user-sessions:' .. ARGV[2]
local sids = redis.call('ZRANGE', sessions, 0, -1)
for _, sid in ipairs(sids) do end_session(ARGV[2], sid) end
redis.call('DEL', sessions)
return #sids
"""
)

# ARGV: prefix, counter key, lock seconds, user key (both keys without the prefix)
#   -> {attempts in this window, seconds left, stored password hash or false}
_BEGIN_LOGIN = Script.of(
    """
local key = ARGV[1] .. ARGV[2]
local attempts = redis.call('INCR', key)
local ttl = redis.call('TTL', key)
if ttl < 0 then
  redis.call('EXPIRE', key, ARGV[3])
  ttl = tonumber(ARGV[3])
end
return {attempts, ttl, redis.call('HGET', ARGV[1] .. ARGV[4], 'password')}
"""
)

# ARGV: prefix, user key (without the prefix), password hash, created -> 1 created, 0 taken
_CREATE_USER = Script.of(
    """
local key = ARGV[1] .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'password', ARGV[3], 'created', ARGV[4])
return 1
"""
)


class Rotation(enum.Enum):
    """What happened to a presented refresh token."""

    ROTATED = 1
    REUSED = -1
    REVOKED = 0


@dataclass(frozen=True)
class LoginAttempt:
    """The attempt's number in the current window, its seconds left, and the stored hash."""

    attempts: int
    retry_after: int
    password_hash: str | None


class RedisStore:
    """All of the service's Redis reads and writes, bound to one client and key prefix.

    The hot commands (the allowlist check and every script) skip redis-py's per-command
    machinery (pool bookkeeping, retry wrapper, observability hooks, response callbacks),
    which costs more CPU than a small command itself: they run on bare connections from a
    small stack of idle ones, one per concurrent request at most (threads or greenlets alike).
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._idle: list[redis.connection.AbstractConnection] = []
        self._pid = os.getpid()

    def _pair_args(self, pair: TokenPair) -> list[str | int]:
        return [
            self.prefix,
            pair.username,
            pair.session_id,
            int(time.time()),
            pair.access_jti,
            pair.access_exp,
            pair.refresh_jti,
            pair.refresh_exp,
        ]

    def record_tokens(self, pair: TokenPair, client_address: str | None = None) -> None:
        """Allowlist a new pair in its session; with ``client_address``, as a login's write,
        also clear that user's failure counter for the address (a success resets it)."""
        reset_key = _attempts_key(pair.username, client_address) if client_address else ""
        self._run(_ISSUE, *self._pair_args(pair), reset_key)

    def is_token_active(self, jti: str) -> bool:
        """The allowlist check, paid on every authenticated request: one EXISTS."""
        return bool(self._execute("EXISTS", self.prefix + "token:" + jti))

    def rotate_refresh_token(self, old_jti: str, old_exp: int, new_pair: TokenPair) -> Rotation:
        """Spend ``old_jti`` and record ``new_pair``; on reuse, end the whole session instead."""
        return Rotation(int(self._run(_ROTATE, *self._pair_args(new_pair), old_jti, old_exp)))

    def end_session(self, username: str, session_id: str) -> int:
        """Revoke every token of one session; returns how many records were in it."""
        return int(self._run(_END_SESSION, self.prefix, username, session_id))

    def end_all_sessions(self, username: str) -> int:
        """Revoke every token of every session of ``username``; returns the session count."""
        return int(self._run(_END_ALL_SESSIONS, self.prefix, username))

    def begin_login(self, username: str, address: str, lock_seconds: int) -> LoginAttempt:
        """Count this attempt and fetch the password hash: one script, one round trip."""
        attempts, retry_after, password_hash = self._run(
            _BEGIN_LOGIN,
            self.prefix,
            _attempts_key(username, address),
            lock_seconds,
            _user_key(username),
        )
        return LoginAttempt(int(attempts), int(retry_after), password_hash or None)

    def create_user(self, username: str, password_hash: str) -> bool:
        """Store a new account; False if the username is taken."""
        return bool(
            self._run(
                _CREATE_USER, self.prefix, _user_key(username), password_hash, int(time.time())
            )
        )

    def user_exists(self, username: str) -> bool:
        """Whether an account exists (used to seed demo users without re-hashing)."""
        return bool(self.client.exists(self.prefix + _user_key(username)))

    def ping(self) -> bool:
        """True when Redis answers; raises redis.RedisError when it does not."""
        return bool(self.client.ping())

    def _run(self, script: Script, *args: str | int) -> Any:
        """EVALSHA, loading the script first if this Redis does not know it (yet, or any more:
        a restart or SCRIPT FLUSH forgets scripts)."""
        try:
            return self._execute("EVALSHA", script.sha, 0, *args)
        except redis.exceptions.NoScriptError:
            self._execute("SCRIPT", "LOAD", script.source)
            return self._execute("EVALSHA", script.sha, 0, *args)

    def _execute(self, *args: str | int) -> Any:
        """One command, one round trip, on an idle connection of this process.

        An idle connection may have been dropped by Redis (restart, timeout, CLIENT KILL)
        while it waited: then the command is sent once more on a new connection, as redis-py's
        own retry would. Should a script have run before its connection broke, the second
        attempt sees its effects: a rotation then reports reuse and ends the session, the safe
        side. A timeout is not retried: Redis is slow or gone, and the caller answers 503 now.
        """
        connection = self._checkout()
        if connection is None:
            return self._send(self._new_connection(), args)
        try:
            return self._send(connection, args)
        except redis.ConnectionError:
            return self._send(self._new_connection(), args)

    def _send(
        self, connection: redis.connection.AbstractConnection, args: tuple[str | int, ...]
    ) -> Any:
        try:
            connection.send_command(*args)
            reply = connection.read_response()
        except redis.ResponseError:
            self._idle.append(connection)  # an error reply leaves the connection in sync
            raise
        except BaseException:
            connection.disconnect()  # its state is unknown: never reuse it
            raise
        self._idle.append(connection)
        return reply

    def _checkout(self) -> redis.connection.AbstractConnection | None:
        """An idle connection of this process, if any (a forked child never uses its
        parent's)."""
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def _new_connection(self) -> redis.connection.AbstractConnection:
        pool = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)


def _attempts_key(username: str, address: str) -> str:
    return f"login-failures:{username}:{address}"


def _user_key(username: str) -> str:
    return f"user:{username}"
