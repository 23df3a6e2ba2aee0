"""gunicorn settings (read by ``gunicorn -c gunicorn.conf.py main:app`` and ``python main.py``).

The configuration is validated here, in the master, so a bad value stops start-up with one
line instead of a crash loop of workers.
"""

import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from initialize.config import ConfigError
from initialize.config import load_settings
from initialize.gunicorn_hooks import install_json_errors
from utils.net import DEFAULT_TRUSTED_PROXIES

try:
    load_settings(os.environ)
except ConfigError as error:
    sys.exit(str(error))

_port = os.environ.get("PORT") or "9090"
if not _port.isdigit() or not 0 < int(_port) < 65536:
    sys.exit(f"configuration error: PORT must be a TCP port number (got {_port!r})")

bind = [os.environ.get("BIND") or f"127.0.0.1:{_port}"]

# Workers: one per core with a few threads each; threads keep keep-alive connections cheap.
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
timeout = 30
graceful_timeout = 30
keepalive = 5

# Proxies whose X-Forwarded-For is believed (the app reads the same variable).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or DEFAULT_TRUSTED_PROXIES

# No gunicornc control socket: its default path is shared by every instance of the user, and
# signals (HUP reload, TERM stop) are the interface here, as with endless.
control_socket_disable = True

# Request limits: gunicorn answers 400/414/431 beyond them, before the app sees anything, in
# JSON like every other error of the service.
install_json_errors()
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Logs to stdout/stderr. The access log has the path without its query string (%(U)s), no
# referer and no headers: tokens may travel in ?token=, and they must never reach a log.
accesslog = "-"
errorlog = "-"
logger_class = "initialize.gunicorn_hooks.ScrubbingLogger"
access_log_format = '%(h)s - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
