"""What the threads worker (initialize/thread_worker.py) takes from gunicorn beyond its public API.

The worker serves requests with gthread's own request handling, so it stands on parts of
gunicorn that no documentation promises: gthread's connection class and request methods, the
parser's read-back buffer, and two module constants. They are imported here, and only here, and
:data:`RELIED_ON` holds a digest of the source of each one as read and checked for the pinned
gunicorn. ``tests/test_gthread_internals.py`` fails, naming what changed, the day an upgrade
changes any of them; then re-read the changed code, adapt the worker, and record the new
digests (``python -m initialize.gthread_internals`` prints them).
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap

import gunicorn
from gunicorn.http import unreader
from gunicorn.workers import gthread
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker

__all__ = ["DEFAULT_WORKER_DATA_TIMEOUT", "STOP_KEEPALIVE_LINGER", "TConn", "ThreadWorker"]

# What the worker relies on, and why:
# - TConn: the connection it hands to ``handle`` (cfg, sock, client, server, parser,
#   initialized, data_ready; ``init`` makes the HTTP/1 parser without I/O when neither TLS nor
#   prior-knowledge h2c is on; ``close``).
# - ThreadWorker.handle / handle_request / _keepalive_after: serve one request, return True to
#   keep the connection; handle_request stops keep-alive once ``len(self.keepalived_conns)``
#   reaches ``self.max_keepalived`` and sets ``alive = False`` at max_requests.
# - ThreadWorker.__init__ / init_process / handle_exit: ``max_keepalived``, ``method_queue``
#   (made in init_process, written to by handle_exit to wake the main thread).
# - PollableMethodQueue: ``fileno``, ``defer``, ``run_callbacks``.
# - Unreader.unread / take_buffered: hand the worker's pre-read request head to the parser, and
#   take back what the parser read ahead of the next request.
# - the module constants: the wait for a new connection's first bytes, and the linger of a
#   stopping worker's kept-alive connections.
_OBJECTS = {
    "gthread.TConn": TConn,
    "gthread.ThreadWorker.__init__": ThreadWorker.__init__,
    "gthread.ThreadWorker.init_process": ThreadWorker.init_process,
    "gthread.ThreadWorker.handle_exit": ThreadWorker.handle_exit,
    "gthread.ThreadWorker.handle": ThreadWorker.handle,
    "gthread.ThreadWorker.handle_request": ThreadWorker.handle_request,
    "gthread.ThreadWorker._keepalive_after": ThreadWorker._keepalive_after,
    "gthread.PollableMethodQueue": gthread.PollableMethodQueue,
    "unreader.Unreader.unread": unreader.Unreader.unread,
    "unreader.Unreader.take_buffered": unreader.Unreader.take_buffered,
}
_CONSTANTS = {
    "gthread.DEFAULT_WORKER_DATA_TIMEOUT": DEFAULT_WORKER_DATA_TIMEOUT,
    "gthread.STOP_KEEPALIVE_LINGER": STOP_KEEPALIVE_LINGER,
}

CHECKED_WITH = "27.0.1"
RELIED_ON = {
    "gthread.TConn": "e3a2878ba952710a",
    "gthread.ThreadWorker.__init__": "a53cfb3b9a0bb8ad",
    "gthread.ThreadWorker.init_process": "091d906a1f5d9991",
    "gthread.ThreadWorker.handle_exit": "2476ee2ba87d42e8",
    "gthread.ThreadWorker.handle": "49edcc01d00df15a",
    "gthread.ThreadWorker.handle_request": "1e773274d3db1326",
    "gthread.ThreadWorker._keepalive_after": "c9a49befb5bd48df",
    "gthread.PollableMethodQueue": "5b4a78bd3cfb9745",
    "unreader.Unreader.unread": "11f279b265f4497b",
    "unreader.Unreader.take_buffered": "51ceea3b5ffc8a8f",
    "gthread.DEFAULT_WORKER_DATA_TIMEOUT": "5.0",
    "gthread.STOP_KEEPALIVE_LINGER": "2.0",
}


def current_digests() -> dict[str, str]:
    """The digest of each relied-on object's source (constants by value) in this gunicorn."""
    digests = {
        name: hashlib.sha256(textwrap.dedent(inspect.getsource(obj)).encode()).hexdigest()[:16]
        for name, obj in _OBJECTS.items()
    }
    digests.update({name: repr(value) for name, value in _CONSTANTS.items()})
    return digests


def changed_internals() -> list[str]:
    """The relied-on names whose source or value differs from what was checked."""
    current = current_digests()
    return sorted(name for name, digest in RELIED_ON.items() if current.get(name) != digest)


if __name__ == "__main__":
    print(f"gunicorn {gunicorn.__version__}")
    for name, digest in current_digests().items():
        print(f'    "{name}": "{digest}",')
