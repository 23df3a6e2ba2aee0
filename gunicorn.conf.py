"""gunicorn settings (read by ``gunicorn -c gunicorn.conf.py main:app`` and ``python main.py``).

Everything comes from the service's validated settings (initialize/config.py), loaded here in
the master, so a bad value stops start-up with one line instead of a crash loop of workers.
"""

import os
import shutil
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Files written on every request live in memory (tmpfs) where there is one: gunicorn's worker
# heartbeat (a utime per request) and the metrics' mmap files would otherwise touch a disk
# filesystem's inodes and journal on every request (gunicorn's docs say the same of the former).
# mkstemp/mkdtemp make unpredictable private names there, as in /tmp (ruff S108, bandit B108).
_SHM = "/dev/shm"  # noqa: S108  # nosec B108
_MEMORY_DIR = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
worker_tmp_dir = _MEMORY_DIR

# Metrics are summed over the workers through per-process files in a directory private to this
# server (prometheus_client's multiprocess mode). prometheus_client reads PROMETHEUS_MULTIPROC_DIR
# when it is first imported, so it is set before anything else; this file is read again on
# every `kill -HUP`, and the same master must keep the same directory (and its counts).
_OWNER = "FLASK_JWT_REDIS_METRICS_OWNER"
_FIRST_LOAD = os.environ.get(_OWNER) != str(os.getpid())
if _FIRST_LOAD:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="flask-jwt-redis-metrics-", dir=_MEMORY_DIR
    )
    os.environ[_OWNER] = str(os.getpid())

from initialize.config import ConfigError  # noqa: E402
from initialize.config import load_settings  # noqa: E402
from initialize.gunicorn_hooks import WORKER_CLASSES  # noqa: E402
from initialize.logs import configure_logging  # noqa: E402
from initialize.logs import gunicorn_logger_class  # noqa: E402
from utils.metrics import mark_worker_dead  # noqa: E402

try:
    _settings = load_settings(os.environ)
except ConfigError as error:
    if _FIRST_LOAD:  # nothing will serve: leave no directory behind
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    sys.exit(str(error))

bind = [_settings.server.bind]
workers = _settings.server.workers
# The threads worker (initialize/thread_worker.py) or gunicorn's gthread or sync, each answering
# gunicorn's own early errors in JSON (gunicorn_hooks.py).
worker_class = WORKER_CLASSES[_settings.server.worker_class]
threads = _settings.server.threads
timeout = 30
graceful_timeout = 30
keepalive = 5

# Proxies whose X-Forwarded-For is believed: the same set the app uses for client addresses.
forwarded_allow_ips = ",".join(sorted(_settings.trusted_proxies))

# No gunicornc control socket: its default path is shared by every instance of the user, and
# signals (HUP reload, TERM stop) are the interface here, as with endless.
control_socket_disable = True

# Request limits: gunicorn answers 400/414/431 beyond them, before the app sees anything, in
# JSON like every other error of the service (the worker classes above).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Logs to stdout in LOG_FORMAT. The access line is built from fields (initialize/logs.py): the
# path without its query string, no referer and no headers: tokens may travel in ?token=.
configure_logging(_settings.log_format)
accesslog = "-"
errorlog = "-"
logger_class = gunicorn_logger_class(_settings.log_format)


def post_worker_init(worker: Any) -> None:
    """The threads worker closes a connection whose request head is not complete in time."""
    worker.client_header_timeout = _settings.server.client_header_timeout


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (reload, crash, max requests): drop its live gauges, keep its counts."""
    mark_worker_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_exit(server: Any) -> None:
    """The master stops: its metrics directory goes with it."""
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
