"""The floor: the bare ping plus the one Redis round trip an authenticated request must pay.

Served by the very same gunicorn settings as the service and the bare app, from the repo root:

    gunicorn -c gunicorn.conf.py bench.floor_app:app

``GET /floor/exists`` asks Redis ``EXISTS`` of one key with redis-py (one pooled client per
worker, hiredis), as an idiomatic app would, and answers text/plain. What this route costs
above the bare ping is the round trip; what the service's welcome costs above this route is
authentication itself.
"""

import os

import redis
from flask import Flask

app = Flask(__name__)
# redis-py connects on the first command, in the worker, never at import.
client = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.get("/floor/exists")
def exists() -> tuple[str, int, dict[str, str]]:
    """One EXISTS, like the allowlist check; the answer's size matches welcome's."""
    found = client.exists("floor:token")
    return f"exists: {found}", 200, {"Content-Type": "text/plain; charset=utf-8"}
