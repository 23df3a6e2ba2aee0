#!/usr/bin/env bash
# Start flask-jwt-redis.
#
#   ./run.sh            Docker mode when a Docker engine answers (`docker info`), else local mode
#   ./run.sh --local    local mode, in the foreground (Ctrl-C / SIGTERM stops all it started)
#   ./run.sh --docker   the tutorial's deployment: network my-net, containers my-redis and
#                       flask-jwt-redis (published on 19090:9090), both --restart always
#   ./run.sh stop       stop and remove the Docker mode's containers (network and volume kept)
#
# The local mode's work (choosing and starting a Redis, the banner, supervising gunicorn) is
# devtools/local.py; this script prepares .venv for it and drives Docker. See usage() below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

export DATA_DIR="${DATA_DIR:-$ROOT/data}"
VENV="$ROOT/.venv"

# Docker mode names (the tutorial's: my-net, my-redis; the app container and image are ours).
NETWORK=my-net
REDIS_CONTAINER=my-redis
REDIS_IMAGE=redis:alpine
REDIS_VOLUME=flask-jwt-redis-data
APP_CONTAINER=flask-jwt-redis
APP_IMAGE=flask-jwt-redis:latest
APP_PORT=9090 # inside the container (the image's BIND)
# Where the app is published on the host: [address:]port; the tutorial's 19090 = every interface.
DOCKER_PUBLISH="${DOCKER_PUBLISH:-19090}"
# Optional settings handed to the app container when they are set here (by name: `-e NAME`,
# so their values never appear on a command line).
PASSTHROUGH_VARS=(ACCESS_TOKEN_TTL REFRESH_TOKEN_TTL JWT_ISSUER JWT_AUDIENCE TOKEN_LOOKUP
    COOKIE_MODE CORS_ORIGINS DEMO_USERS LOGIN_MAX_FAILURES LOGIN_LOCK_SECONDS REDIS_KEY_PREFIX
    ACCOUNT_MAX_FAILURES REGISTER_MAX_PER_ADDRESS REGISTER_WINDOW_SECONDS
    MAX_SESSIONS_PER_USER REFRESH_REUSE_GRACE_SECONDS INTROSPECTION_CLIENTS LOG_FORMAT
    METRICS_ALLOW_IPS)

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

# ---------------------------------------------------------------------------------------------
# Docker mode
# ---------------------------------------------------------------------------------------------

require_docker() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed (or not on PATH)"
    docker_answers || die "no Docker engine answers ('docker info' failed): start Docker, or use ./run.sh --local"
}

exists() { # kind name: true when `docker <kind> inspect <name>` finds it
    docker "$1" inspect "$2" >/dev/null 2>&1
}

remove_container() { # name: graceful stop, then remove, when it exists
    if exists container "$1"; then
        log "stopping and removing container $1"
        docker stop -t 30 "$1" >/dev/null || true
        docker rm -f "$1" >/dev/null
    fi
}

docker_stop() {
    require_docker
    remove_container "$APP_CONTAINER"
    remove_container "$REDIS_CONTAINER"
    log "stopped (network $NETWORK and volume $REDIS_VOLUME are kept)"
}

docker_up() {
    require_docker
    [[ "$DOCKER_PUBLISH" =~ ^(([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9a-fA-F:]+\]):)?[0-9]{1,5}$ ]] ||
        die "DOCKER_PUBLISH must be [address:]port, e.g. 19090 or 127.0.0.1:19090 (got '$DOCKER_PUBLISH')"
    if ! exists image "$APP_IMAGE"; then
        log "image $APP_IMAGE not found: building it first (./build.sh)"
        "$ROOT/build.sh"
    fi

    local secret # JWT_SECRET, else data/secret (generated once, mode 600); never printed
    secret="$(python3 -m devtools.secret)" || exit 1

    if ! exists network "$NETWORK"; then
        log "creating network $NETWORK"
        docker network create --driver bridge "$NETWORK" >/dev/null
    fi
    if ! exists volume "$REDIS_VOLUME"; then
        log "creating volume $REDIS_VOLUME"
        docker volume create "$REDIS_VOLUME" >/dev/null
    fi

    remove_container "$APP_CONTAINER"
    remove_container "$REDIS_CONTAINER"

    log "starting $REDIS_CONTAINER ($REDIS_IMAGE, AOF on, data in volume $REDIS_VOLUME)"
    docker run -d \
        --name "$REDIS_CONTAINER" \
        --restart always \
        --network "$NETWORK" \
        -v "$REDIS_VOLUME:/data" \
        "$REDIS_IMAGE" \
        redis-server --appendonly yes >/dev/null

    local -a passthrough=()
    local name
    for name in "${PASSTHROUGH_VARS[@]}"; do
        if [[ -n "${!name+set}" ]]; then
            passthrough+=(-e "$name")
        fi
    done

    log "starting $APP_CONTAINER ($APP_IMAGE)"
    # The secret travels in this command's environment (-e JWT_SECRET without a value), never
    # in its arguments. Other optional settings are passed the same way.
    JWT_SECRET="$secret" docker run -d \
        --name "$APP_CONTAINER" \
        --restart always \
        --network "$NETWORK" \
        -p "$DOCKER_PUBLISH:$APP_PORT" \
        -e APP_ENV=production \
        -e "REDIS_URL=redis://$REDIS_CONTAINER:6379/0" \
        -e JWT_SECRET \
        ${passthrough[@]+"${passthrough[@]}"} \
        "$APP_IMAGE" >/dev/null

    # What the engine really publishes (e.g. 0.0.0.0:19090 and [::]:19090 for every interface).
    local published
    published="$(docker port "$APP_CONTAINER" "$APP_PORT/tcp" | tr '\n' ' ')"
    log "published on ${published% }"
    log "up: curl http://$(curl_host):${DOCKER_PUBLISH##*:}/public/ping ; logs: docker logs -f $APP_CONTAINER ; stop: ./run.sh stop"
}

curl_host() { # the address to reach the published port from this machine
    local address=127.0.0.1
    if [[ "$DOCKER_PUBLISH" == *:* ]]; then
        address="${DOCKER_PUBLISH%:*}"
    fi
    case "$address" in
    0.0.0.0 | "") echo 127.0.0.1 ;;
    "[::]") echo "[::1]" ;;
    *) echo "$address" ;;
    esac
}

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
        docker_up
    else
        log "no Docker engine: local mode"
        local_mode
    fi
    ;;
--local) local_mode ;;
--docker) docker_up ;;
stop) docker_stop ;;
-h | --help) usage ;;
*)
    printf 'run.sh: unknown argument: %s\n' "$1" >&2
    usage >&2
    exit 2
    ;;
esac
