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

# What the worker relies on, and why (each class is digested whole: a change anywhere in it
# is worth a look):
# - TConn: the connection it hands to ``handle`` (cfg, sock, client, server, parser,
#   initialized, data_ready; ``init`` makes the HTTP/1 parser without I/O when neither TLS nor
#   prior-knowledge h2c is on; ``close``).
# - ThreadWorker: ``handle`` serves one request and returns True to keep the connection (after
#   draining an unread body, bounded in time); ``handle_request`` stops keep-alive once
#   ``len(self.keepalived_conns)`` reaches ``self.max_keepalived`` and sets ``alive = False`` at
#   max_requests; ``init_process`` makes ``method_queue``, which ``handle_exit`` writes to.
# - PollableMethodQueue: ``fileno``, ``defer``, ``run_callbacks``.
# - Unreader: ``unread`` hands the worker's pre-read request head to the parser,
#   ``take_buffered`` takes back what the parser read ahead of the next request.
# - the module constants: the wait for a new connection's first bytes, and the linger of a
#   stopping worker's kept-alive connections.
_OBJECTS = {
    "gthread.TConn": TConn,
    "gthread.ThreadWorker": ThreadWorker,
    "gthread.PollableMethodQueue": gthread.PollableMethodQueue,
    "unreader.Unreader": unreader.Unreader,
}
_CONSTANTS = {
    "gthread.DEFAULT_WORKER_DATA_TIMEOUT": DEFAULT_WORKER_DATA_TIMEOUT,
    "gthread.STOP_KEEPALIVE_LINGER": STOP_KEEPALIVE_LINGER,
}

CHECKED_WITH = "27.0.1"
RELIED_ON = {
    "gthread.TConn": "e3a2878ba952710a",
    "gthread.ThreadWorker": "2cde92a57d7bae10",
    "gthread.PollableMethodQueue": "5b4a78bd3cfb9745",
    "unreader.Unreader": "84aaa8f91fcdbbae",
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
