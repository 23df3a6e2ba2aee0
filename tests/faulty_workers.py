"""Threads workers with a fault planted in a serving thread, for tests/test_worker_floods.py.

Each raises once per server (a marker file named by ``FAULT_MARKER`` says it has), from the loop
a serving thread runs, with a message that quotes a token the scrubbed error log must not show.
"""

from __future__ import annotations

import os

from initialize.thread_worker import SharedPollJsonErrorWorker

SECRET_IN_MESSAGE = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrZXNhIn0.c2VjcmV0LXNpZ25hdHVyZQ"
PLANTED = f"planted fault quoting {SECRET_IN_MESSAGE}"


class ThreadKiller(BaseException):
    """What no ``except Exception`` catches: it ends the thread it is raised in."""


class RaisesOnceInLoop(SharedPollJsonErrorWorker):
    """A serving thread's first turn raises an ordinary exception, once per server."""

    fault: type[BaseException] = RuntimeError

    def _poll_and_serve(self, *, helper: bool) -> None:
        try:
            os.close(os.open(os.environ["FAULT_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            super()._poll_and_serve(helper=helper)
        else:
            raise self.fault(PLANTED)


class KillsAThread(RaisesOnceInLoop):
    """A serving thread's first turn raises what ends the thread, once per server."""

    fault = ThreadKiller
