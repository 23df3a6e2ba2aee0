"""The ceiling: a bare Flask app with one route, GET /public/ping, and nothing else.

Served by the very same gunicorn settings as the service, from the repo root:

    gunicorn -c gunicorn.conf.py bench.bare_app:app

(gunicorn.conf.py validates the service's configuration at load, so this process gets the
same environment as the service; the app itself reads none of it.)
"""

from flask import Flask

app = Flask(__name__)


@app.get("/public/ping")
def ping() -> tuple[str, int, dict[str, str]]:
    """The same answer as the service's ping: ``pong`` as text/plain."""
    return "pong", 200, {"Content-Type": "text/plain; charset=utf-8"}
