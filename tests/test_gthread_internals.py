"""The threads worker stands on parts of gthread no documentation promises: this fails, naming
them, the day a gunicorn upgrade changes any of them (initialize/gthread_internals.py)."""

import gunicorn

from initialize.gthread_internals import CHECKED_WITH
from initialize.gthread_internals import changed_internals


def test_the_gthread_internals_the_worker_relies_on_are_as_checked():
    changed = changed_internals()
    assert not changed, (
        f"gunicorn {gunicorn.__version__} changed what initialize/thread_worker.py relies on "
        f"(checked with {CHECKED_WITH}): {', '.join(changed)}. Re-read the changed code, adapt "
        "the worker, then record the new digests (python -m initialize.gthread_internals)."
    )
