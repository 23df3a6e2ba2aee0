"""A threaded gunicorn worker whose threads take their own work: gthread without its hand-offs.

gunicorn's gthread worker accepts every connection in its main thread, hands it to a thread
pool, has the pool thread wait for the first bytes in a selector of its own, and hands the
connection back to the main thread through a pipe when the response is sent. The sync worker
has none of that but blocks on every slow request (an Argon2 login) and closes every
connection. Measured with ``../shared/perf``'s command (BENCHMARKS.md), gthread costs about
0.2-0.3x of a bare Flask ping more than sync per new connection.

Here the threads share one epoll set where every socket is registered one-shot: the
listeners, and the connections waiting for their next request (kept alive, or new and not
yet sending). The thread that wakes up for a socket serves it itself, takes the next waiting
connections straight from the listener as sync does, and parks a kept-alive connection back
in the set. Requests are served by gthread's own ``handle`` (parsing, HTTP/2, errors,
keep-alive rules, access log); only the scheduling differs.

Threads serving side by side fight over the GIL at every system call (about 0.1x of a bare
ping per request, measured), so one thread at a time holds a baton and serves. A standby
thread waits for the baton and steps in beside the holder only when the holder's request
has run for ``_HELP_AFTER_SECONDS`` (a login hashing, a slow client, a slow Redis), and
steps back when the holder is quick again: sync's cost while requests are quick, gthread's
latency while some are slow. Linux only (epoll), like the image; config.py falls back to
gthread elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
from typing import Any

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker

from initialize.gunicorn_hooks import JsonErrors

# Each registration wakes one thread once, then stays silent until its owner re-arms it.
_ONE_SHOT_READ = select.EPOLLIN | select.EPOLLONESHOT
# How often the threads look at the clock (idle deadlines, stop) and the main thread beats.
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
_GONE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED)


class _Conn(TConn):
    """A client connection, with its registration and the deadline of its idle wait."""

    registered = False
    deadline = 0.0


class SharedPollThreadWorker(ThreadWorker):
    """gthread's request handling, scheduled by the threads themselves (module docstring)."""

    def run(self) -> None:
        self._epoll = select.epoll()
        # Parked connections by fd. The name is gthread's: its handle_request stops keeping
        # connections alive once this holds max_keepalived.
        self.keepalived_conns: dict[int, _Conn] = {}
        self._parked_lock = threading.Lock()
        self._next_sweep = 0.0
        self._linger_until = 0.0
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
        while self.alive:  # the main thread only beats and waits for a signal
            self.notify()
            if not self.is_parent_alive():
                self.alive = False
            elif select.select([self.method_queue.fileno()], [], [], _TICK_SECONDS)[0]:
                self.method_queue.run_callbacks(None)  # gthread's handle_exit wakes us here
        self._stop(threads)

    def _stop(self, threads: list[threading.Thread]) -> None:
        """Accept nothing more; finish what runs, answer what arrives on a parked connection
        for a short while (with ``Connection: close``), then close everything."""
        for fd in self._listeners:
            self._unregister(fd)
        self._linger_until = time.monotonic() + min(self.cfg.keepalive, STOP_KEEPALIVE_LINGER)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        for thread in threads:
            while thread.is_alive() and time.monotonic() < deadline:
                self.notify()
                thread.join(min(_TICK_SECONDS, max(0.0, deadline - time.monotonic())))
        self._close_expired(float("inf"))
        self._epoll.close()
        for listener in self.sockets:
            listener.close()

    def _serve(self) -> None:
        """One thread's life: the baton holder serves; one standby waits to take the baton or
        to help; the other threads wait for the standby's place."""
        while self._serving():
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
        return self.alive or time.monotonic() < self._linger_until

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
            events = self._epoll.poll(_HELP_AFTER_SECONDS if helper else _TICK_SECONDS, 1)
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + _TICK_SECONDS
                self._close_expired(now)
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
        """Take one new connection; re-arm the listener after the event that announced it."""
        try:
            sock, client = listener.accept()
        except OSError as error:  # another worker took it, or the client gave up
            if error.errno not in _GONE:
                raise
            return None
        finally:
            if rearm and self.alive:
                self._rearm(listener.fileno())
        return _Conn(self.cfg, sock, client, server)

    def _serve_guarded(self, conn: _Conn) -> None:
        holder = threading.get_ident() == self._holder
        if holder:
            self._holder_started = time.monotonic()
        try:
            self._serve_connection(conn)
        except Exception:  # the thread must live on; gthread's handle catches the rest
            self.log.exception("Error serving a connection")
            conn.close()
        finally:
            if holder:
                self._holder_started = None
                self._last_request = time.monotonic()

    def _serve_connection(self, conn: _Conn) -> None:
        """Serve the requests that have arrived; park the connection when none is waiting."""
        while True:
            if not conn.data_ready:
                try:
                    waiting = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:  # nothing yet: wait in the poller, not in this thread
                    self._park(conn, DEFAULT_WORKER_DATA_TIMEOUT)
                    return
                except OSError:  # reset by the client
                    waiting = b""
                if not waiting:
                    conn.close()
                    return
                conn.data_ready = True  # gthread's handle then skips its own wait for data
            if self.handle(conn) is not True:
                conn.close(graceful=True)
                return
            # A body drain may have read the next request already: the socket won't say so.
            conn.data_ready = bool(conn.parser.unreader.buf.getvalue())
            if not conn.data_ready:
                self._park(conn, self.cfg.keepalive)
                return

    def _park(self, conn: _Conn, seconds: float) -> None:
        """Wait for the connection's next bytes in the poller, for ``seconds`` at most."""
        if not self.alive:
            seconds = min(seconds, STOP_KEEPALIVE_LINGER)
        conn.deadline = time.monotonic() + seconds
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
        expired = []
        with self._parked_lock:
            for fd, conn in list(self.keepalived_conns.items()):
                if conn.deadline <= now:
                    del self.keepalived_conns[fd]
                    expired.append((fd, conn))
        for fd, conn in expired:
            self._unregister(fd)
            conn.close()

    def _rearm(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # unregistered meanwhile: the worker is stopping
            self._epoll.modify(fd, _ONE_SHOT_READ)

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)


class SharedPollJsonErrorWorker(JsonErrors, SharedPollThreadWorker):
    """The worker above, answering gunicorn's early errors in JSON (gunicorn_hooks.py)."""
