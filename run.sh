#!/usr/bin/env bash
# Start flask-jwt-redis.
#
#   ./run.sh            Docker mode when a Docker engine answers (`docker info`), else local mode
#   ./run.sh --local    local mode, in the foreground (Ctrl-C / SIGTERM stops all it started)
#   ./run.sh --docker   the tutorial's deployment: network my-net, containers my-redis and
#                       flask-jwt-redis (published on 19090:9090), both --restart always
#   ./run.sh stop       stop and remove the Docker mode's containers (network and volume kept)
#
# A dispatcher: the local mode's work (choosing and starting a Redis, the banner, supervising
# gunicorn) is devtools/local.py, run from .venv, which this script prepares; the Docker mode's
# (image, network, volume, containers, the secret) is devtools/docker.py. See usage() below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

export DATA_DIR="${DATA_DIR:-$ROOT/data}"
VENV="$ROOT/.venv"

usage() {
    cat <<'EOF'
Usage: ./run.sh [--local | --docker | stop | --help]

  (no argument)  Docker mode if `docker info` answers, else local mode
  --local        run in the foreground with gunicorn from .venv (created from
                 requirements.txt when missing or when requirements.txt changed);
                 Ctrl-C / SIGTERM stops gunicorn and whatever Redis this script started
  --docker       start the image flask-jwt-redis:latest (built by ./build.sh if missing)
                 next to a redis:alpine container (AOF on, volume flask-jwt-redis-data)
                 on network my-net; the app is published on DOCKER_PUBLISH
  stop           stop and remove the containers my-redis and flask-jwt-redis
                 (the network and the Redis volume are kept)
  -h, --help     this text

Environment:
  PORT          local port (default 9090); BIND overrides the whole address
                (default 127.0.0.1:$PORT)
  DOCKER_PUBLISH  Docker mode: [address:]port published on the host for the app
                (default 19090, every interface, as the tutorial; e.g. 127.0.0.1:19090)
  APP_ENV       local mode default: development (dev secret, demo user kesa/123);
                the Docker mode always runs production
  JWT_SECRET    Docker mode: taken from the environment if set (>= 32 bytes), else
                generated once into data/secret (mode 600) and reused
  REDIS_URL     local mode: use this Redis
  LOCAL_REDIS   local mode Redis choice: auto (default: REDIS_URL, else a Redis
                answering on 127.0.0.1:6379, else a private redis-server, else the
                embedded stand-in), private (always a private redis-server, AOF on,
                data in data/redis-$PORT/), embedded (always the in-memory stand-in:
                nothing persists)
  DATA_DIR      where data lives (default ./data)
  STOP_TIMEOUT  seconds to wait for a graceful stop before killing (default 40)
EOF
}

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() {
    printf 'run.sh: error: %s\n' "$*" >&2
    exit 1
}

docker_answers() { docker info >/dev/null 2>&1; }

# Docker mode (up or stop): devtools/docker.py, with the machine's python3 (no .venv needed).
docker_mode() { exec python3 -m devtools.docker "$1"; }

# ---------------------------------------------------------------------------------------------
# Local mode: .venv here, the rest (Redis choice, banner, gunicorn, stopping) in devtools/local.py
# ---------------------------------------------------------------------------------------------

ensure_venv() {
    local want have py="${PYTHON:-python3}"
    want="$(sha256sum <requirements.txt | cut -d' ' -f1)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV from requirements.txt"
        if ! "$py" -m venv "$VENV"; then
            rm -rf "$VENV"
            die "could not create $VENV with $py (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
    fi
    have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
    if [[ "$want" != "$have" ]]; then
        log "installing requirements.txt into $VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt
        printf '%s\n' "$want" >"$VENV/.requirements.sha256"
    fi
}

local_mode() {
    case "${LOCAL_REDIS:-auto}" in
    auto | private | embedded) ;;
    *)
        printf 'run.sh: LOCAL_REDIS must be auto, private or embedded (got %q)\n' "$LOCAL_REDIS" >&2
        exit 2
        ;;
    esac
    ensure_venv
    exec "$VENV/bin/python" -m devtools.local
}

# ---------------------------------------------------------------------------------------------

if (($# > 1)); then
    usage >&2
    exit 2
fi

case "${1:-}" in
"")
    if command -v docker >/dev/null 2>&1 && docker_answers; then
        log "a Docker engine answers: Docker mode (use ./run.sh --local for local mode)"
        docker_mode up
    else
        log "no Docker engine: local mode"
        local_mode
    fi
    ;;
--local) local_mode ;;
--docker) docker_mode up ;;
stop) docker_mode stop ;;
-h | --help) usage ;;
*)
    printf 'run.sh: unknown argument: %s\n' "$1" >&2
    usage >&2
    exit 2
    ;;
esac
