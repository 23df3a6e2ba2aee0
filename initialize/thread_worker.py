"""A threaded gunicorn worker whose threads take their own work: gthread without its hand-offs.

gunicorn's gthread worker accepts every connection in its main thread, hands it to a thread
pool, has the pool thread wait for the first bytes in a selector of its own, and hands the
connection back to the main thread through a pipe when the response is sent. The sync worker
has none of that but blocks on every slow request (an Argon2 login) and closes every
connection. gthread costs about 0.2-0.3x of a bare Flask ping more than sync per new
connection (BENCHMARKS.md); docs/worker.md tells the whole story.

Here the threads share one epoll set where every socket is registered one-shot: the
listeners, and the connections waiting for bytes (new, kept alive, or part-way through their
request head). The thread that wakes up for a socket reads what has arrived without waiting;
once a whole request head is in, it serves the request with gthread's own ``handle``
(parsing, errors, keep-alive rules, access log), takes the next waiting connections straight
from the listener as sync does, and parks a connection that has nothing more back in the set.
So an idle or slowly-trickling client holds no thread, and a request head must be complete
within ``client_header_timeout`` of the connection (or of its first byte, on a kept-alive one).

Threads serving side by side fight over the GIL at every system call (about 0.1x of a bare
ping per request, measured), so one thread at a time holds a baton and serves. A standby
thread waits for the baton and steps in beside the holder only when the holder's request
has run for ``_HELP_AFTER_SECONDS`` (a login hashing, a slow Redis, a slow body), and steps
back when the holder is quick again: sync's cost while requests are quick, gthread's latency
while some are slow.

Under floods the worker stays a worker: it keeps at most ``worker_connections`` connections
(the oldest parked one makes room for a new one), an accept that finds no file descriptor
closes the oldest parked connection to make room (and with none to close, pauses accepting
with a growing back-off), an exception
in a serving thread is logged and the thread goes on, and a thread that dies anyway makes the
worker exit so that gunicorn replaces it. Linux only (epoll), like the image; config.py falls
back to gthread elsewhere. What it takes from gthread is named in initialize/gthread_internals.py.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import threading
import time
from typing import Any

from initialize.config import DEFAULT_CLIENT_HEADER_TIMEOUT
from initialize.gthread_internals import DEFAULT_WORKER_DATA_TIMEOUT
from initialize.gthread_internals import STOP_KEEPALIVE_LINGER
from initialize.gthread_internals import TConn
from initialize.gthread_internals import ThreadWorker
from initialize.gunicorn_hooks import JsonErrors

# Each registration wakes one thread once, then stays silent until its owner re-arms it.
_ONE_SHOT_READ = select.EPOLLIN | select.EPOLLONESHOT
# How often the threads look at the clock (deadlines, stop) and the main thread beats.
_TICK_SECONDS = 1.0
# New connections a thread takes straight from the listener after one the poller announced.
_DIRECT_ACCEPTS = 16
# A request running this long lets a second thread serve beside it (module docstring): above
# a quick request's time on a busy machine (5 ms often was: the holder was only preempted),
# below a login's Argon2 hash (about 25 ms).
_HELP_AFTER_SECONDS = 0.02
# How often the standby looks while requests come (within _BUSY_SECONDS), and while none do.
_BUSY_SECONDS = 1.0
_IDLE_TICK_SECONDS = 0.25
# Accepting pauses this long after the process ran out of descriptors or buffers, doubling
# while it keeps happening, up to the maximum.
_ACCEPT_PAUSE_SECONDS = 0.05
_MAX_ACCEPT_PAUSE_SECONDS = 1.0
_WARN_EVERY_SECONDS = 10.0
# A serving thread whose loop raised waits this long before it goes on (no spinning).
_ERROR_PAUSE_SECONDS = 0.1
_HEAD_CHUNK = 65536
_GONE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Conn(TConn):
    """A client connection: its registration, its wait in the poller, its request head so far."""

    registered = False
    deadline = 0.0  # when its current wait in the poller ends
    head_deadline = math.inf  # when its request head must be complete

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.head = bytearray()


def head_complete(head: bytes | bytearray) -> bool:
    """Whether ``head`` holds a whole request head (leading blank lines aside, RFC 9112 §2.2)."""
    start = len(head) - len(head.lstrip(b"\r\n"))
    return head.find(b"\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0


class SharedPollThreadWorker(ThreadWorker):
    """gthread's request handling, scheduled by the threads themselves (module docstring)."""

    # gunicorn.conf.py's post_worker_init sets it from CLIENT_HEADER_TIMEOUT.
    client_header_timeout = DEFAULT_CLIENT_HEADER_TIMEOUT

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Refuse, at start-up, what this worker does not serve (gunicorn prints one line)."""
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError(
                "GUNICORN_WORKER_CLASS=threads does not serve TLS (certfile is set): "
                "terminate TLS in a proxy, or set GUNICORN_WORKER_CLASS=gthread"
            )
        if cfg.http2_cleartext in ("prior-knowledge", "both"):
            raise RuntimeError(
                "GUNICORN_WORKER_CLASS=threads does not serve prior-knowledge HTTP/2 "
                "(http2_cleartext): set GUNICORN_WORKER_CLASS=gthread"
            )

    def run(self) -> None:
        self._epoll = select.epoll()
        # Parked connections by fd, oldest first. The name is gthread's: its handle_request
        # stops keeping connections alive once this holds max_keepalived.
        self.keepalived_conns: dict[int, _Conn] = {}
        self._parked_lock = threading.Lock()  # guards keepalived_conns and _open
        self._open = 0
        self._max_head = _max_head_bytes(self.cfg)
        self._next_sweep = 0.0
        self._stop_at = math.inf  # the threads serve until then (set when the worker stops)
        self._accept_paused_until = 0.0
        self._accept_pause = _ACCEPT_PAUSE_SECONDS
        self._next_accept_warning = 0.0
        # The baton's holder serves; the standby helps while the holder is slow (docstring).
        self._baton = threading.Lock()
        self._standby = threading.Lock()
        self._holder: int | None = None
        self._holder_started: float | None = None
        self._last_request = 0.0
        self._listeners = {}
        for listener in self.sockets:
            listener.setblocking(False)
            self._listeners[listener.fileno()] = (listener, listener.getsockname())
            self._epoll.register(listener.fileno(), _ONE_SHOT_READ)
        threads = [
            threading.Thread(target=self._serve, name=f"worker-thread-{n}", daemon=True)
            for n in range(self.cfg.threads)
        ]
        for thread in threads:
            thread.start()
        while self.alive:  # the main thread beats, watches its threads, waits for a signal
            if not all(thread.is_alive() for thread in threads):
                self.log.error("A serving thread died: the worker exits, gunicorn replaces it")
                return
            self.notify()
            if not self.is_parent_alive():
                self.alive = False
            elif select.select([self.method_queue.fileno()], [], [], _TICK_SECONDS)[0]:
                self.method_queue.run_callbacks(None)  # handle_exit and the threads wake us
        self._stop(threads)

    def _stop(self, threads: list[threading.Thread]) -> None:
        """Accept nothing more; finish what runs, answer what arrives on a parked connection
        for a short while (with ``Connection: close``), then close everything."""
        for fd in self._listeners:
            self._unregister(fd)
        linger = time.monotonic() + min(self.cfg.keepalive, STOP_KEEPALIVE_LINGER)
        with self._parked_lock:
            for conn in self.keepalived_conns.values():
                conn.deadline = min(conn.deadline, linger)
        self._stop_at = linger
        deadline = time.monotonic() + self.cfg.graceful_timeout
        for thread in threads:
            while thread.is_alive() and time.monotonic() < deadline:
                self.notify()
                thread.join(min(_TICK_SECONDS, max(0.0, deadline - time.monotonic())))
        self._close_expired(math.inf)
        self._epoll.close()
        for listener in self.sockets:
            listener.close()

    def _serve(self) -> None:
        """One thread's life. An exception is logged and the thread goes on; should the thread
        end anyway while the worker runs, the main thread sees it and the worker exits."""
        try:
            while self._serving():
                try:
                    self._take_turn()
                except Exception:
                    self.log.exception("Error in a serving thread; it goes on")
                    time.sleep(_ERROR_PAUSE_SECONDS)
        except BaseException:  # logged here, scrubbed, rather than by threading's own hook
            self.log.exception("A serving thread ends on an error")
        finally:
            self.method_queue.defer(_nothing)  # wake the main thread to look at its threads

    def _take_turn(self) -> None:
        """The baton holder serves; one standby waits to take the baton or to help; the
        other threads wait for the standby's place."""
        with self._standby:
            holder = self._wait_for_baton()
        if holder:
            self._holder = threading.get_ident()
            try:
                self._poll_and_serve(helper=False)
            finally:
                self._holder = None
                self._baton.release()
        else:
            self._poll_and_serve(helper=True)

    def _serving(self) -> bool:
        return time.monotonic() < self._stop_at

    def _wait_for_baton(self) -> bool:
        """True with the baton; False when its holder is stuck in a slow request (help it)."""
        while self._serving():
            busy = time.monotonic() - self._last_request < _BUSY_SECONDS
            if self._baton.acquire(timeout=_HELP_AFTER_SECONDS if busy else _IDLE_TICK_SECONDS):
                return True
            if self._holder_is_slow():
                return False
        return False

    def _holder_is_slow(self) -> bool:
        started = self._holder_started
        return started is not None and time.monotonic() - started >= _HELP_AFTER_SECONDS

    def _poll_and_serve(self, *, helper: bool) -> None:
        """Serve what the poller announces; a helper stops as soon as the holder is fast again."""
        while self._serving() and not (helper and not self._holder_is_slow()):
            timeout = _HELP_AFTER_SECONDS if helper else _TICK_SECONDS
            if self._accept_paused_until:
                timeout = min(timeout, max(0.0, self._accept_paused_until - time.monotonic()))
            events = self._epoll.poll(timeout, 1)
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + _TICK_SECONDS
                self._close_expired(now)
            if self._accept_paused_until and now >= self._accept_paused_until:
                self._resume_accepting()
            for fd, _ in events:
                if fd in self._listeners:
                    self._serve_new_connections(*self._listeners[fd])
                    continue
                with self._parked_lock:
                    conn = self.keepalived_conns.pop(fd, None)
                if conn is not None:
                    self._serve_guarded(conn)

    def _serve_new_connections(self, listener: Any, server: Any) -> None:
        """Serve the connection the poller announced, then, as the sync worker does, the next
        ones already waiting (a bounded number, so parked clients get their turn): each of
        those costs one accept instead of a poll, a wake-up and a re-arm."""
        conn = self._accept(listener, server, rearm=True)
        served = 0
        while conn is not None:
            self._serve_guarded(conn)
            served += 1
            if served > _DIRECT_ACCEPTS or not self.alive:
                return
            conn = self._accept(listener, server, rearm=False)

    def _accept(self, listener: Any, server: Any, *, rearm: bool) -> _Conn | None:
        """Take one new connection, making room for it past ``worker_connections``; re-arm
        the listener after the event that announced it, unless accepting is paused."""
        try:
            sock, client = self._accept_making_room(listener)
        except OSError as error:
            if error.errno in _OUT_OF_RESOURCES:
                self._pause_accepting(error)
            elif error.errno not in _GONE:  # else another worker took it, or the client left
                raise
            return None
        finally:
            if rearm and self.alive and not self._accept_paused_until:
                self._rearm(listener.fileno())
        self._accept_pause = _ACCEPT_PAUSE_SECONDS
        with self._parked_lock:
            self._open += 1
            crowded = self._open > self.worker_connections
        if crowded:
            self._close_oldest_parked()
        conn = _Conn(self.cfg, sock, client, server)
        conn.head_deadline = time.monotonic() + self.client_header_timeout
        return conn

    def _accept_making_room(self, listener: Any) -> tuple[socket.socket, Any]:
        """``accept``; out of descriptors or buffers, the connection that has waited longest
        in the poller (an idle one) is closed to make room, as often as that helps."""
        while True:
            try:
                return listener.accept()
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                self._warn_accept_failed(error, "closing the oldest idle connection")
                if not self._close_oldest_parked():
                    raise

    def _warn_accept_failed(self, error: OSError, action: str) -> None:
        """One warning per ``_WARN_EVERY_SECONDS`` at most: a flood must not flood the log."""
        now = time.monotonic()
        if now >= self._next_accept_warning:
            self._next_accept_warning = now + _WARN_EVERY_SECONDS
            name = errno.errorcode.get(error.errno, str(error.errno))
            self.log.warning("accept failed (%s): %s", name, action)

    def _pause_accepting(self, error: OSError) -> None:
        """Out of descriptors or buffers with no idle connection to close: leave the listener
        alone for a while (doubling while it lasts) instead of spinning on it or dying."""
        self._warn_accept_failed(error, f"pausing accepts for {self._accept_pause:.2f} s")
        self._accept_paused_until = time.monotonic() + self._accept_pause
        self._accept_pause = min(self._accept_pause * 2, _MAX_ACCEPT_PAUSE_SECONDS)

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        if self.alive:
            for fd in self._listeners:
                self._rearm(fd)

    def _serve_guarded(self, conn: _Conn) -> None:
        holder = threading.get_ident() == self._holder
        if holder:
            self._holder_started = time.monotonic()
        try:
            self._serve_connection(conn)
        except Exception:  # the thread must live on; gthread's handle catches the rest
            self.log.exception("Error serving a connection")
            self._close(conn)
        finally:
            if holder:
                self._holder_started = None
                self._last_request = time.monotonic()
            if not self.alive:  # max_requests reached in handle_request: wake the main thread
                self.method_queue.defer(_nothing)

    def _serve_connection(self, conn: _Conn) -> None:
        """Serve every request whose head has arrived; park the connection for more bytes."""
        while True:
            if not self._read_head(conn):
                return
            conn.init()  # the HTTP/1 parser (no I/O: TLS and prior-knowledge h2c are refused)
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head.clear()
            conn.data_ready = True  # gthread's handle then skips its own wait for data
            if self.handle(conn) is not True:
                self._close(conn, graceful=True)
                return
            # A body drain may have read ahead into the next request: the socket won't say so.
            conn.head += conn.parser.unreader.take_buffered()
            if not conn.head:  # the usual case: wait for the next request in the poller
                conn.head_deadline = math.inf
                self._park(conn, time.monotonic() + self.cfg.keepalive)
                return
            conn.head_deadline = self._head_deadline()

    def _read_head(self, conn: _Conn) -> bool:
        """Read what has arrived without waiting. True when a whole request head is buffered;
        otherwise the connection is parked for more, or closed (client gone, time over)."""
        while not head_complete(conn.head) and len(conn.head) <= self._max_head:
            try:
                chunk = conn.sock.recv(_HEAD_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:  # nothing more yet: wait in the poller, not in this thread
                self._park_for_head(conn)
                return False
            except OSError:  # reset by the client
                chunk = b""
            if not chunk:
                self._close(conn)
                return False
            if not conn.head and conn.head_deadline == math.inf:  # a kept-alive connection
                conn.head_deadline = self._head_deadline()
            conn.head += chunk
        return True  # an over-long head goes to the parser, which answers 431

    def _head_deadline(self) -> float:
        return time.monotonic() + self.client_header_timeout

    def _park_for_head(self, conn: _Conn) -> None:
        now = time.monotonic()
        if now >= conn.head_deadline:  # CLIENT_HEADER_TIMEOUT: the client is too slow
            self._close(conn)
        elif conn.head:
            self._park(conn, conn.head_deadline)
        elif conn.parser is None:  # new and silent: gthread's wait for the first bytes
            self._park(conn, min(now + DEFAULT_WORKER_DATA_TIMEOUT, conn.head_deadline))
        else:
            self._park(conn, now + self.cfg.keepalive)

    def _park(self, conn: _Conn, deadline: float) -> None:
        """Wait for the connection's next bytes in the poller, until ``deadline`` at most."""
        if not self.alive:
            deadline = min(deadline, time.monotonic() + STOP_KEEPALIVE_LINGER)
        conn.deadline = deadline
        fd = conn.sock.fileno()
        with self._parked_lock:  # listed before it is armed: its event may come at once
            self.keepalived_conns[fd] = conn
        if conn.registered:
            self._rearm(fd)
        else:
            conn.registered = True
            self._epoll.register(fd, _ONE_SHOT_READ)

    def _close_expired(self, now: float) -> None:
        """Close parked connections whose deadline has passed (all of them at ``inf``)."""
        with self._parked_lock:
            expired = [conn for conn in self.keepalived_conns.values() if conn.deadline <= now]
            for conn in expired:
                del self.keepalived_conns[conn.sock.fileno()]
        for conn in expired:
            self._close(conn)

    def _close_oldest_parked(self) -> bool:
        """Make room: close the connection that has waited longest in the poller, if any."""
        with self._parked_lock:
            if not self.keepalived_conns:
                return False
            oldest = self.keepalived_conns.pop(next(iter(self.keepalived_conns)))
        self._close(oldest)
        return True

    def _close(self, conn: _Conn, *, graceful: bool = False) -> None:
        """Close a connection this worker took (closing its fd also leaves the epoll set)."""
        with self._parked_lock:
            self._open -= 1
        try:
            conn.close(graceful=graceful)
        except OSError:
            self.log.debug("Closing a connection failed", exc_info=True)

    def _rearm(self, fd: int) -> None:
        try:
            self._epoll.modify(fd, _ONE_SHOT_READ)
        except OSError:  # unregistered meanwhile: the worker is stopping
            self.log.debug("Re-arming fd %s failed", fd)

    def _unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            self.log.debug("Unregistering fd %s failed", fd)


def _nothing() -> None:
    """A wake-up call for the main thread, which then looks at its threads and ``alive``."""


def _max_head_bytes(cfg: Any) -> int:
    """The longest head gunicorn's parser could accept: past it, the parser refuses it."""
    line = cfg.limit_request_line or 8190
    fields = cfg.limit_request_fields or 32768
    field = cfg.limit_request_field_size or 8190
    return line + fields * (field + 2) + 4


class SharedPollJsonErrorWorker(JsonErrors, SharedPollThreadWorker):
    """The worker above, answering gunicorn's early errors in JSON (gunicorn_hooks.py)."""
