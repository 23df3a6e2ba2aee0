"""The allowlist check's answers, kept in the worker while Redis says nothing changed.

Every authenticated request asks Redis whether its token and session records still exist, and
that round trip is most of what the request costs (BENCHMARKS.md). Redis can tell a client
when keys change instead: with ``CLIENT TRACKING ... BCAST PREFIX`` it sends the name of every
key under the prefix that is written, deleted or expired, and a null for a flush, to a
connection of the client's choosing. Each worker keeps one such connection and remembers the
"still active" answers for ``max_age`` seconds at most.

A background thread per process (started with the cache, again on first use in a forked
child) owns the connection: it connects with back-off, reads what Redis sends, and PINGs. A
pong answering a PING sent at time t proves that every change Redis made before t has been read
and applied (a connection delivers in order), so answers are used only while the latest such t
(or the subscription) is less than ``max_age`` ago. Requests ask for a PING once the proof is
half that old, so a cache in use stays proven and an unused one sends nothing. A connection
that stops answering (a NAT or firewall that dropped it without a word) thus stops the cache
within ``max_age``; the thread drops it when its pong is late, and every request asks Redis
until a new connection is proven.

Before a remembered answer is used, the request looks at the connection without waiting: what
has already arrived (Redis sends a change in the same pass of its event loop as its reply to
the revoking command) is applied first, so a logout on one worker is refused on the next
request everywhere. A request never waits for the connection: when the thread holds it, more
than a few messages are waiting, or only part of one has arrived, that request asks Redis.
Any failure, a fork or Redis refusing tracking forgets every answer.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

import redis

logger = logging.getLogger(__name__)

INVALIDATION_CHANNEL = "__redis__:invalidate"
MESSAGE = ("message", b"message")  # a pub/sub message, decoded or not
PONG = ("pong", b"pong")  # PING's answer on a subscribed RESP2 connection
# Bound on remembered answers (one per token in use): past it, all are forgotten at once.
MAX_ENTRIES = 50_000
# Messages a request reads itself; beyond them it leaves the rest to the thread and asks Redis.
REQUEST_READS = 8
# A request that finds the proof older than max_age * RENEW_AFTER has the thread PING, so in
# a cache in use the pong renews the proof before it runs out (an unused one sends nothing).
RENEW_AFTER = 0.5
# A pong later than this (and max_age) means the connection is dead; the thread first looks
# for it after FIRST_PONG_LOOK_SECONDS, then at doubling intervals.
PONG_WAIT_SECONDS = 1.0
FIRST_PONG_LOOK_SECONDS = 0.001
# The thread reads what arrived at least this often even when no request wakes it, so Redis
# never has to hold a long backlog for the connection (it closes a pub/sub client that lags).
READ_SECONDS = 1.0
# Back-off between failed connects: doubling from the first to the last value.
RETRY_FIRST_SECONDS = 0.05
RETRY_LAST_SECONDS = 2.0


class AllowlistCache:
    """Remembered "active" answers of the allowlist check (module docstring).

    ``open_connection`` makes a RESP2 ``redis.Connection`` to the server the store uses.
    Thread-safe; a forked child starts empty with a thread and a connection of its own.
    """

    def __init__(
        self, open_connection: Callable[[], redis.Connection], prefix: str, max_age: float
    ) -> None:
        self._open_connection = open_connection
        self._prefix = prefix
        self._max_age = max_age
        self._pong_wait = max(max_age, PONG_WAIT_SECONDS)
        self._generation = 0
        self._start()
        # Not a pid check per request (a system call): a forked child resets itself once and
        # connects on first use.
        os.register_at_fork(
            after_in_child=functools.partial(_call, weakref.WeakMethod(self._start))
        )
        # Connecting takes a few round trips, each waiting for the GIL in a busy process: start
        # now, so the first requests find the cache ready.
        self._want()

    def _start(self) -> None:
        """The state of a process that has not used the cache yet."""
        # The shared lock: remembered answers. Held for memory work only, never for I/O.
        self._lock = threading.Lock()
        # Every use of the tracking connection (redis-py's are not thread-safe). Requests
        # only try it; the thread may hold it, but never while it waits on the network.
        self._io_lock = threading.Lock()
        self._connection: redis.Connection | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._wanted = False  # a request wants a (renewed) proof: connect or PING
        self._refused = False  # Redis refused tracking: never ask again
        self._retry_at = 0.0
        self._failures = 0
        # Answers are used before this monotonic time: the last proof plus max_age; from
        # _renew_at (no later) a request asks for a new proof.
        self._usable_until = 0.0
        self._renew_at = 0.0
        self._ping_sent_at: float | None = None  # the PING awaiting its pong
        # token key -> (session key, deadline); session key -> its token keys
        self._entries: dict[str, tuple[str, float]] = {}
        self._sessions: dict[str, set[str]] = {}
        # Changes each time an invalidation is applied or everything is forgotten: an answer
        # fetched across such a change is not remembered (it may predate the change).
        self._generation += 1

    def current(self) -> int | None:
        """Apply what Redis has sent; the generation to pass to :meth:`remember`, or None
        when nothing can be used or remembered for this request (ask Redis)."""
        now = time.monotonic()
        if now >= self._renew_at:  # one comparison while the proof is fresh
            if now >= self._usable_until:
                self._unproven()
                return None
            self._renew_at = self._usable_until
            self._want()
        if not self._io_lock.acquire(blocking=False):
            return None  # the thread or another request is reading: no waiting
        try:
            return self._read(REQUEST_READS)
        finally:
            self._io_lock.release()

    def holds(self, token_key: str, session_key: str) -> bool:
        """Whether both records are known to exist (call right after :meth:`current`)."""
        entry = self._entries.get(token_key)
        return entry is not None and entry[0] == session_key and entry[1] > time.monotonic()

    def remember(self, token_key: str, session_key: str, generation: int) -> None:
        """Keep an "active" answer fetched after :meth:`current` returned ``generation``,
        unless a change was applied since (one still unread is applied before any use)."""
        with self._lock:
            now = time.monotonic()
            if self._generation != generation or now >= self._usable_until:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._forget_all()
            self._entries[token_key] = (session_key, now + self._max_age)
            self._sessions.setdefault(session_key, set()).add(token_key)

    def close(self) -> None:
        """Stop the thread, drop the tracking connection and everything remembered (a later
        :meth:`current` starts over)."""
        with self._io_lock:
            self._thread, self._wanted = None, False
            self._wake.set()
            self._drop()

    def _unproven(self) -> None:
        """A request found no recent proof: forget, and have the thread connect."""
        if self._refused:
            return
        if self._entries:
            with self._lock:
                self._forget_all()
        if not self._wanted:
            self._want()

    def _want(self) -> None:
        """Have the thread connect or PING (starting it if this process has none)."""
        with self._lock:
            self._wanted = True
            thread = None
            if self._thread is None:
                thread = self._thread = threading.Thread(
                    target=_track,
                    args=(weakref.WeakMethod(self._turn), self._wake),
                    name="allowlist-cache",
                    daemon=True,
                )
                weakref.finalize(self, self._wake.set)  # a collected cache ends its thread
        if thread is not None:
            thread.start()
        self._wake.set()

    def _read(self, limit: int | None) -> int | None:
        """Under the I/O lock: apply up to ``limit`` messages that have fully arrived; the
        generation if nothing more is waiting, else None (the thread is woken for the rest)."""
        connection = self._connection
        if connection is None:
            return None
        try:
            if not connection.is_connected:  # closed from outside: redis-py would reconnect
                raise redis.ConnectionError("tracking connection closed")
            read = 0
            while connection.can_read(timeout=0):
                if read == limit:
                    self._wake.set()
                    return None
                message = connection.read_response(timeout=0, disconnect_on_error=False)
                self._apply(message)
                read += 1
        except redis.TimeoutError:  # part of a message: the rest is on its way
            return None
        except Exception:  # closed, reset, garbled: forget everything, ask Redis meanwhile
            self._drop()
            return None
        return self._generation

    def _apply(self, message: object) -> None:
        """Under the I/O lock: one message from the tracking connection."""
        if isinstance(message, list) and len(message) == 2 and message[0] in PONG:
            if self._ping_sent_at is None:
                raise ValueError("a pong for no ping on the tracking connection")
            self._prove(self._ping_sent_at)
            self._ping_sent_at = None
            return
        if not (isinstance(message, list) and len(message) == 3 and message[0] in MESSAGE):
            raise ValueError("unexpected message on the tracking connection")
        keys = message[2]
        with self._lock:
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

    def _turn(self) -> tuple[float | None, redis.Connection | None] | None:
        """One turn of the thread: None when it is to end (closed, forked away, tracking
        refused); else how long it waits (None: until woken) and the connection it holds."""
        if self._thread is not threading.current_thread() or self._refused:
            return None
        try:
            delay = self._step()
        except Exception:  # a bug: say so, start over on a new connection a little later
            logger.exception("allowlist cache: the tracking thread failed")
            with self._io_lock:
                self._drop()
            delay = RETRY_LAST_SECONDS
        return delay, self._connection

    def _step(self) -> float | None:
        """The thread's work: connect, read, PING; seconds until it is due again (None:
        when woken)."""
        now = time.monotonic()
        if now >= self._usable_until and self._entries:
            with self._lock:
                self._forget_all()
        if self._connection is None:
            if self._refused or not self._wanted:
                return None
            if now < self._retry_at:
                return self._retry_at - now
            self._connect()
            return 0.0
        with self._io_lock:
            if self._connection is None:
                return 0.0
            self._read(None)
            if self._connection is None:
                return 0.0
            if self._ping_sent_at is not None:
                waited = now - self._ping_sent_at
                if waited > self._pong_wait:  # silently gone
                    self._drop()
                    return 0.0
                # Look for the pong at doubling intervals (a round trip on loopback: one look)
                return min(max(waited, FIRST_PONG_LOOK_SECONDS), self._pong_wait - waited)
            if not self._wanted:
                return READ_SECONDS
            try:
                self._connection.send_command("PING", check_health=False)
            except Exception:
                self._drop()
                return 0.0
            self._ping_sent_at = now
            return FIRST_PONG_LOOK_SECONDS

    def _connect(self) -> None:
        """In the thread, no lock held: open, enable tracking, subscribe, then publish."""
        connection = None
        try:
            connection = self._open_connection()
            connection.connect()
            connection.send_command("CLIENT", "ID", check_health=False)
            client_id = connection.read_response()
            # Invalidations for every key under the prefix, to this same connection
            connection.send_command(
                "CLIENT",
                "TRACKING",
                "ON",
                "REDIRECT",
                client_id,
                "BCAST",
                "PREFIX",
                self._prefix,
                check_health=False,
            )
            connection.read_response()
            subscribed_at = time.monotonic()
            connection.send_command("SUBSCRIBE", INVALIDATION_CHANNEL, check_health=False)
            connection.read_response()
        except redis.ResponseError:  # tracking refused (an old server, ACLs, a stand-in)
            self._refused = True
            if connection is not None:
                connection.disconnect()
            return
        except Exception:
            self._failures += 1
            delay = RETRY_FIRST_SECONDS * 2 ** min(self._failures - 1, 10)
            self._retry_at = time.monotonic() + min(delay, RETRY_LAST_SECONDS)
            if connection is not None:
                connection.disconnect()
            return
        with self._io_lock:
            if self._thread is not threading.current_thread():  # closed meanwhile
                connection.disconnect()
                return
            with self._lock:
                self._forget_all()
            self._connection = connection
            self._failures = 0
            # Alive when SUBSCRIBE was sent; answers are fetched after its reply, so every
            # change they do not reflect reaches this connection.
            self._prove(subscribed_at)

    def _prove(self, at: float) -> None:
        """Under the I/O lock: every change Redis made before ``at`` has been applied."""
        self._usable_until = at + self._max_age
        self._renew_at = at + self._max_age * RENEW_AFTER
        self._wanted = False

    def _drop(self) -> None:
        """Under the I/O lock: unusable until a new connection is proven."""
        connection, self._connection = self._connection, None
        self._usable_until = self._renew_at = 0.0
        self._ping_sent_at = None
        with self._lock:
            self._forget_all()
        if connection is not None:
            connection.disconnect()

    def _forget_all(self) -> None:
        """Under the shared lock."""
        self._entries.clear()
        self._sessions.clear()
        self._generation += 1


def _track(
    turn: weakref.WeakMethod[Callable[[], tuple[float | None, redis.Connection | None] | None]],
    wake: threading.Event,
) -> None:
    """The tracking thread: takes turns until its cache is closed, collected or forked away.
    It holds the cache only during a turn, so an app nobody uses can be collected, and the
    connection in between, so that it is closed here rather than by the collector."""
    held = None
    while (take := turn()) is not None:
        wake.clear()
        taken = take()
        del take
        if taken is None:
            return
        delay, held = taken
        wake.wait(delay)
    if held is not None:
        held.disconnect()


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call ``method`` unless its object was collected (a fork handler must not keep the
    cache alive)."""
    alive = method()
    if alive is not None:
        alive()
