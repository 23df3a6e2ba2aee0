"""The allowlist check's answers, kept in the worker while Redis says nothing changed.

Every authenticated request asks Redis whether its token and session records still exist, and
that round trip is most of what the request costs (BENCHMARKS.md). Redis can tell a client
when keys change instead: with ``CLIENT TRACKING ... BCAST PREFIX`` it sends the name of every
key under the prefix that is written, deleted or expired, and a null for a flush, to a
connection of the client's choosing. Each worker keeps one such connection and remembers the
"still active" answers; before any remembered answer is used, the worker reads what Redis has
sent (a non-blocking read, no round trip) and forgets every answer one of whose keys changed.

So a token that logout, rotation or an ended session revokes stops working as soon as Redis
has delivered the change to each worker: Redis sends it in the same pass of its event loop as
its reply to the revoking command. An answer is kept ``max_age`` seconds at most, and on any
doubt (the tracking connection fails or closes, a fork, Redis refusing tracking) every answer
is forgotten and requests ask Redis until the connection is back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis

INVALIDATION_CHANNEL = "__redis__:invalidate"
MESSAGE = ("message", b"message")  # a pub/sub message, decoded or not
# After the tracking connection failed, requests ask Redis for this long before it is retried.
RETRY_SECONDS = 1.0
# Bound on remembered answers (one per token in use): past it, all are forgotten at once.
MAX_ENTRIES = 50_000


class AllowlistCache:
    """Remembered "active" answers of the allowlist check (module docstring).

    ``open_connection`` makes a RESP2 ``redis.Connection`` to the server the store uses.
    Thread-safe; a forked child starts empty with a connection of its own.
    """

    def __init__(
        self, open_connection: Callable[[], redis.Connection], prefix: str, max_age: float
    ) -> None:
        self._open_connection = open_connection
        self._prefix = prefix
        self._max_age = max_age
        self._lock = threading.Lock()
        self._connection: redis.Connection | None = None
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._refused = False
        # token key -> (session key, deadline); session key -> its token keys
        self._entries: dict[str, tuple[str, float]] = {}
        self._sessions: dict[str, set[str]] = {}
        # Changes each time an invalidation is read or everything is forgotten: an answer
        # fetched across such a change is not remembered (it may predate the change).
        self._generation = 0

    def current(self) -> int | None:
        """Read what Redis has sent; the generation to pass to :meth:`remember`, or None
        when nothing can be remembered now (tracking unavailable)."""
        with self._lock:
            return self._generation if self._tracking() else None

    def holds(self, token_key: str, session_key: str) -> bool:
        """Whether both records are known to exist (call right after :meth:`current`)."""
        entry = self._entries.get(token_key)
        return entry is not None and entry[0] == session_key and entry[1] > time.monotonic()

    def remember(self, token_key: str, session_key: str, generation: int) -> None:
        """Keep an "active" answer fetched after :meth:`current` returned ``generation``,
        unless Redis reported a change since."""
        with self._lock:
            if not self._tracking() or self._generation != generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._forget_all()
            self._entries[token_key] = (session_key, time.monotonic() + self._max_age)
            self._sessions.setdefault(session_key, set()).add(token_key)

    def close(self) -> None:
        """Drop the tracking connection and everything remembered."""
        with self._lock:
            self._drop()

    def _tracking(self) -> bool:
        """Under the lock: True when the tracking connection is up and everything it carried
        has been applied."""
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            self._pid, self._connection = os.getpid(), None
            self._forget_all()
        if self._connection is None and not self._connect():
            return False
        connection = self._connection
        try:
            while connection.can_read(timeout=0):
                self._apply(connection.read_response())
        except Exception:  # closed, reset, garbled: forget everything, ask Redis meanwhile
            self._drop()
            return False
        return True

    def _connect(self) -> bool:
        if self._refused or time.monotonic() < self._retry_at:
            return False
        connection = self._open_connection()
        try:
            connection.send_command("CLIENT", "ID")
            client_id = connection.read_response()
            # Invalidations for every key under the prefix, to this same connection
            connection.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self._prefix
            )
            connection.read_response()
            connection.send_command("SUBSCRIBE", INVALIDATION_CHANNEL)
            connection.read_response()
        except redis.ResponseError:  # tracking refused (an old server, ACLs, a stand-in)
            self._refused = True
            connection.disconnect()
            return False
        except Exception:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            connection.disconnect()
            return False
        self._connection = connection
        self._forget_all()
        return True

    def _apply(self, message: object) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] in MESSAGE):
            raise ValueError("unexpected message on the tracking connection")
        keys = message[2]
        if keys is None:  # the database was flushed
            self._forget_all()
            return
        self._generation += 1
        for raw in keys:
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            entry = self._entries.pop(key, None)
            if entry is not None:
                tokens = self._sessions.get(entry[0])
                if tokens is not None:
                    tokens.discard(key)
                    if not tokens:
                        del self._sessions[entry[0]]
            for token_key in self._sessions.pop(key, ()):
                self._entries.pop(token_key, None)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self._forget_all()
        if connection is not None:
            connection.disconnect()

    def _forget_all(self) -> None:
        self._entries.clear()
        self._sessions.clear()
        self._generation += 1
