"""A threaded gunicorn worker whose threads take their own work: gthread without its hand-offs.

gunicorn's gthread worker accepts every connection in its main thread, hands it to a thread
pool, has the pool thread wait for the first bytes in a selector of its own, and hands the
connection back to the main thread through a pipe when the response is sent. Measured with
``../shared/perf``'s command (BENCHMARKS.md), those hand-offs cost about 0.2x of a bare Flask
ping per new connection over the sync worker, which has none of them but blocks on every
slow request (an Argon2 login) and closes every connection.

Here the threads share one epoll set where every socket is registered one-shot: the
listeners, and the connections waiting for their next request (kept alive, or new and not
yet sending). Whichever thread wakes up for a socket owns it: it accepts and serves the
connection itself, then parks it back in the set when it is kept alive. Requests are served
by gthread's own ``handle`` (parsing, HTTP/2, errors, keep-alive rules, access log), so only
the scheduling differs: sync's cost per connection, gthread's keep-alive and threads.
Linux only (epoll), like the image; config.py falls back to gthread elsewhere.
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
        while self.alive or time.monotonic() < self._linger_until:
            events = self._epoll.poll(_TICK_SECONDS, 1)
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + _TICK_SECONDS
                self._close_expired(now)
            for fd, _ in events:
                if fd in self._listeners:
                    conn = self._accept(*self._listeners[fd])
                else:
                    with self._parked_lock:
                        conn = self.keepalived_conns.pop(fd, None)
                if conn is None:
                    continue
                try:
                    self._serve_connection(conn)
                except Exception:  # the thread must live on; gthread's handle catches the rest
                    self.log.exception("Error serving a connection")
                    conn.close()

    def _accept(self, listener: Any, server: Any) -> _Conn | None:
        """Take one new connection, then re-arm the listener for the next thread."""
        try:
            sock, client = listener.accept()
        except OSError as error:  # another worker took it, or the client gave up
            if error.errno not in _GONE:
                raise
            return None
        finally:
            if self.alive:
                self._rearm(listener.fileno())
        return _Conn(self.cfg, sock, client, server)

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
