# flask-jwt-redis image, multi-stage as in the Go tutorial (build in a full image, ship on
# distroless). Build with ./build.sh, run with ./run.sh --docker (or docker compose up -d).
#
# The build stage is Debian 12, the same distribution and the same CPython (3.11, /usr/bin/python3)
# as gcr.io/distroless/python3-debian12, so the venv and its compiled wheels (hiredis,
# argon2-cffi-bindings) run unchanged on the final image.

#
# Build
#
FROM debian:12-slim AS build
LABEL org.opencontainers.image.title=flask-jwt-redis

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /tmp/requirements.txt
RUN /usr/bin/python3 -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && /venv/bin/pip uninstall -y --disable-pip-version-check pip setuptools

# The application code (only what runs; see also .dockerignore).
WORKDIR /app
COPY main.py gunicorn.conf.py /app/
COPY api /app/api
COPY global_state /app/global_state
COPY initialize /app/initialize
COPY middleware /app/middleware
COPY routers /app/routers
COPY utils /app/utils
RUN /usr/bin/python3 -m compileall -q /app

#
# Deploy
#
FROM gcr.io/distroless/python3-debian12
LABEL org.opencontainers.image.title=flask-jwt-redis

COPY --from=build /venv /venv
COPY --from=build /app /app
WORKDIR /app

ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND=0.0.0.0:9090

# distroless's unprivileged user (uid 65532)
USER nonroot
EXPOSE 9090

# The probe follows BIND / PORT, as gunicorn.conf.py does (exec form: there is no shell).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/venv/bin/python3", "-c", "import os, sys, urllib.request as r\n# Probe where gunicorn.conf.py binds: BIND, else 127.0.0.1:$PORT (a wildcard means loopback).\nhost, _, port = (os.environ.get(\"BIND\") or \"127.0.0.1:\" + (os.environ.get(\"PORT\") or \"9090\")).rpartition(\":\")\nhost = {\"\": \"127.0.0.1\", \"0.0.0.0\": \"127.0.0.1\", \"[::]\": \"[::1]\"}.get(host, host)\nopener = r.build_opener(r.ProxyHandler({}))  # no proxy, even if HTTP_PROXY is set\ntry:\n    sys.exit(0 if opener.open(f\"http://{host}:{port}/healthz\", timeout=4).status == 200 else 1)\nexcept Exception:\n    sys.exit(1)"]

ENTRYPOINT ["/venv/bin/gunicorn", "-c", "gunicorn.conf.py", "main:app"]
