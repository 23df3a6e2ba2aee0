"""The names of the store's Redis keys: what each key is called, holds and how long it lives.

Every key is under the configured prefix and a hash tag of the user's name, so that every key
of one user lives in one Redis Cluster slot and each multi-key change can be one atomic script
(``P`` is REDIS_KEY_PREFIX, ``{u}`` the user's name in braces; all but ``user`` carry a TTL):

* ``P{u}:token:<jti>`` -> username, expiring exactly at the token's ``exp`` (the Go app's
  allowlist); a token is live while its record and its session's record both exist;
* ``P{u}:spent:<jti>`` -> ``"<new jti> <time>"``: the refresh jti that replaced a refresh token
  spent once and when (reuse detection, the reuse grace window, and recognising our own
  retried rotation);
* ``P{u}:session:<sid>`` -> sorted set of the session's token jtis scored by ``exp``; ending a
  session deletes it, which revokes all its tokens at once (their own records then lapse at
  their ``exp``: a script may only touch keys it is given, and it cannot know them up front);
* ``P{u}:session-meta:<sid>`` -> hash of what ``GET /user/sessions`` shows (created, refreshed,
  expires, client address, user agent), expiring with the session's last token;
* ``P{u}:sessions`` -> sorted set of the user's session ids scored by their last ``exp``;
* ``P{u}:session-order`` -> sorted set of the same ids scored by when each was last issued
  tokens, a per-user count that only grows (the session limit ends the lowest: exact, where
  seconds would tie), expiring with the user's last session;
* ``P{u}:login-failures:<address>`` -> login attempts of the user from one address, and
  ``P{u}:account-failures`` -> from every address, each with the lock window as TTL;
* ``P{address:<a>}:registrations`` -> registrations attempted from one client address, with
  the registration window as TTL (an address's own hash tag: the colon keeps it apart from
  every username's);
* ``P{u}:user`` -> hash with the Argon2id ``password`` hash, ``created`` time, the account
  ``version`` (absent = 0; see :meth:`RedisStore.change_account`) and, while an operator has
  disabled the account, ``disabled``. Accounts written by earlier versions under ``Puser:<u>``
  are moved here the first time they are used;
* ``P{u}:replicated`` -> a mark written after each change that waits for the replicas
  (:meth:`RedisStore.run_durably`), expiring after ``MARK_SECONDS``
  (utils/redis_connection.py).
"""

from __future__ import annotations

import re

from utils.tokens import TokenPair
from utils.users import USERNAME_PATTERN


class KeyLayout:
    """The key names under one prefix (REDIS_KEY_PREFIX)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, username: str, kind: str, name: str = "") -> str:
        """``P{username}:kind[:name]``: the hash tag keeps one user's keys in one slot."""
        base = f"{self.prefix}{{{username}}}:{kind}"
        return f"{base}:{name}" if name else base

    def pair_keys(self, pair: TokenPair) -> list[str]:
        """The keys recording a token pair touches, in the order its scripts' KEYS name them."""
        user = pair.username
        return [
            self.key(user, "token", pair.access_jti),
            self.key(user, "token", pair.refresh_jti),
            self.key(user, "session", pair.session_id),
            self.key(user, "sessions"),
            self.key(user, "session-meta", pair.session_id),
            self.key(user, "user"),
            self.key(user, "session-order"),
        ]

    def session_keys(self, username: str, session_ids: list[str]) -> list[str]:
        """The user's sessions and session-order sets, then each session's record and meta."""
        keys = [self.key(username, "sessions"), self.key(username, "session-order")]
        for sid in session_ids:
            keys += [self.key(username, "session", sid), self.key(username, "session-meta", sid)]
        return keys

    def failure_keys(self, username: str, address: str) -> list[str]:
        """The user's failed-login counters: from this address, and from every address."""
        return [
            self.key(username, "login-failures", address),
            self.key(username, "account-failures"),
        ]

    def registration_key(self, address: str) -> str:
        """The counter of registrations from ``address``, in the address's own slot."""
        return f"{self.prefix}{{address:{address}}}:registrations"

    def legacy_account_key(self, username: str) -> str:
        """Where earlier versions stored the account (``Puser:<name>``, another slot)."""
        return f"{self.prefix}user:{username}"

    def accounts_match(self) -> str:
        """A SCAN MATCH pattern every account key (of this and earlier versions) matches."""
        return glob_escape(self.prefix) + "*user*"

    def account_name(self, key: str) -> str | None:
        """The username an account key (``P{name}:user``, or an earlier version's
        ``Puser:name``) belongs to; None for any other key."""
        rest = key[len(self.prefix) :]
        if rest.startswith("{") and rest.endswith("}:user"):
            name = rest[1 : -len("}:user")]
        elif rest.startswith("user:"):
            name = rest[len("user:") :]
        else:
            return None
        return name if USERNAME_PATTERN.fullmatch(name) else None


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (MATCH)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
