#!/usr/bin/env bash
# Start flask-jwt-redis.
#
#   ./run.sh            Docker mode when a Docker engine answers (`docker info`), else local mode
#   ./run.sh --local    local mode, in the foreground (Ctrl-C / SIGTERM stops all it started)
#   ./run.sh --docker   the tutorial's deployment: network my-net, containers my-redis and
#                       flask-jwt-redis (published on 19090:9090), both --restart always
#   ./run.sh stop       stop and remove the Docker mode's containers (network and volume kept)
#
# See usage() below for the environment variables.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

DATA_DIR="${DATA_DIR:-$ROOT/data}"
VENV="$ROOT/.venv"

# Docker mode names (the tutorial's: my-net, my-redis; the app container and image are ours).
NETWORK=my-net
REDIS_CONTAINER=my-redis
REDIS_IMAGE=redis:alpine
REDIS_VOLUME=flask-jwt-redis-data
APP_CONTAINER=flask-jwt-redis
APP_IMAGE=flask-jwt-redis:latest
APP_PUBLISH=19090:9090
# Optional settings handed to the app container when they are set here (by name: `-e NAME`,
# so their values never appear on a command line).
PASSTHROUGH_VARS=(ACCESS_TOKEN_TTL REFRESH_TOKEN_TTL JWT_ISSUER JWT_AUDIENCE TOKEN_LOOKUP
    COOKIE_MODE CORS_ORIGINS DEMO_USERS LOGIN_MAX_FAILURES LOGIN_LOCK_SECONDS REDIS_KEY_PREFIX)

usage() {
    cat <<'EOF'
Usage: ./run.sh [--local | --docker | stop | --help]

  (no argument)  Docker mode if `docker info` answers, else local mode
  --local        run in the foreground with gunicorn from .venv (created from
                 requirements.txt when missing or when requirements.txt changed);
                 Ctrl-C / SIGTERM stops gunicorn and whatever Redis this script started
  --docker       start the image flask-jwt-redis:latest (built by ./build.sh if missing)
                 next to a redis:alpine container (AOF on, volume flask-jwt-redis-data)
                 on network my-net; the app is published on port 19090
  stop           stop and remove the containers my-redis and flask-jwt-redis
                 (the network and the Redis volume are kept)
  -h, --help     this text

Environment:
  PORT          local port (default 9090); BIND overrides the whole address
                (default 127.0.0.1:$PORT)
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

# Prints the JWT secret for the app container: JWT_SECRET from the environment, else the one
# kept in $DATA_DIR/secret (generated on first use, mode 600). Never logged.
jwt_secret() {
    local file="$DATA_DIR/secret" secret
    if [[ -n "${JWT_SECRET:-}" ]]; then
        secret="$JWT_SECRET"
    else
        if [[ ! -s "$file" ]]; then
            mkdir -p "$DATA_DIR"
            (
                umask 077 # before the file is created: it is never readable by others
                if command -v python3 >/dev/null 2>&1; then
                    python3 -c 'import secrets; print(secrets.token_urlsafe(48))'
                elif command -v openssl >/dev/null 2>&1; then
                    openssl rand -base64 48 | tr -d '\n'
                    echo
                else
                    head -c 48 /dev/urandom | base64 | tr -d '\n'
                    echo
                fi >"$file.tmp"
            )
            chmod 600 "$file.tmp"
            mv -f "$file.tmp" "$file"
            log "generated a JWT secret into $file (mode 600); it is reused from now on"
        fi
        if [[ -n "$(find "$file" -perm /077 2>/dev/null)" ]]; then
            chmod 600 "$file"
            log "tightened $file to mode 600"
        fi
        secret="$(<"$file")"
    fi
    if ((${#secret} < 32)); then
        die "JWT_SECRET must be at least 32 bytes (the app refuses a shorter one in production)"
    fi
    printf '%s' "$secret"
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
    if ! exists image "$APP_IMAGE"; then
        log "image $APP_IMAGE not found: building it first (./build.sh)"
        "$ROOT/build.sh"
    fi

    local secret
    secret="$(jwt_secret)"

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

    log "starting $APP_CONTAINER ($APP_IMAGE) on http://127.0.0.1:${APP_PUBLISH%%:*}"
    # The secret travels in this command's environment (-e JWT_SECRET without a value), never
    # in its arguments. Other optional settings are passed the same way.
    JWT_SECRET="$secret" docker run -d \
        --name "$APP_CONTAINER" \
        --restart always \
        --network "$NETWORK" \
        -p "$APP_PUBLISH" \
        -e APP_ENV=production \
        -e "REDIS_URL=redis://$REDIS_CONTAINER:6379/0" \
        -e JWT_SECRET \
        ${passthrough[@]+"${passthrough[@]}"} \
        "$APP_IMAGE" >/dev/null

    log "up: curl http://127.0.0.1:${APP_PUBLISH%%:*}/public/ping ; logs: docker logs -f $APP_CONTAINER ; stop: ./run.sh stop"
}

# ---------------------------------------------------------------------------------------------
# Local mode
# ---------------------------------------------------------------------------------------------

GUNICORN_PID=""
REDIS_PID=""
REDIS_KIND=""
TMP_DIR=""
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"

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

redis_ping() { # host port: true when a Redis answers PONG within 0.5 s
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import socket
import sys

try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5) as s:
        s.settimeout(0.5)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = s.recv(64)
except (OSError, ValueError):
    sys.exit(1)
sys.exit(0 if reply.startswith(b"+PONG") else 1)
PY
}

free_port() {
    "$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Waits (bounded) until 127.0.0.1:$2 answers PING; false if pid $1 dies or time runs out.
wait_redis() {
    local pid=$1 port=$2 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if redis_ping 127.0.0.1 "$port"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Starts a background job in its own process group (so the terminal's Ctrl-C reaches only this
# script, which then stops it gracefully); sets BG_PID.
BG_PID=""
start_bg() {
    set -m
    "$@" </dev/null &
    BG_PID=$!
    set +m
}

start_private_redis() {
    command -v redis-server >/dev/null 2>&1 ||
        die "LOCAL_REDIS=private but redis-server is not installed (apt-get install redis-server)"
    local dir="$DATA_DIR/redis-$PORT" old port attempt
    mkdir -p "$dir"
    chmod 700 "$dir"
    if [[ -f "$dir/redis.pid" ]]; then
        old="$(cat "$dir/redis.pid" 2>/dev/null || true)"
        if [[ "$old" =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null &&
            [[ "$(ps -p "$old" -o comm= 2>/dev/null)" == *redis* ]]; then
            die "a redis-server (pid $old) already serves $dir: is another ./run.sh --local running with PORT=$PORT? Stop it or choose another PORT"
        fi
        rm -f "$dir/redis.pid"
    fi
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        start_bg redis-server "$ROOT/redis-local.conf" \
            --port "$port" --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
        REDIS_PID=$BG_PID
        REDIS_KIND="redis-server"
        if wait_redis "$REDIS_PID" "$port"; then
            REDIS_URL="redis://127.0.0.1:$port/0"
            log "private redis-server (pid $REDIS_PID) on 127.0.0.1:$port, AOF on, data in $dir (log: $dir/redis.log)"
            return 0
        fi
        stop_pid "$REDIS_PID" redis-server
        REDIS_PID=""
        log "redis-server did not come up on port $port (attempt $attempt)"
    done
    tail -n 5 "$dir/redis.log" >&2 2>/dev/null || true
    die "could not start redis-server (see $dir/redis.log)"
}

start_embedded_redis() {
    local spec port i
    if ! "$VENV/bin/python" -c 'import fakeredis' 2>/dev/null; then
        spec="$(grep -iE '^[[:space:]]*fakeredis(\[[^]]*\])?[[:space:]]*==' requirements-dev.txt 2>/dev/null | head -n 1 | tr -d '[:space:]' || true)"
        spec="${spec:-fakeredis[lua]}"
        log "installing $spec into $VENV for the embedded Redis stand-in"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$spec"
    fi
    TMP_DIR="$(mktemp -d)"
    start_bg "$VENV/bin/python" -m initialize.standin_redis --port 0 --port-file "$TMP_DIR/port"
    REDIS_PID=$BG_PID
    REDIS_KIND="embedded Redis stand-in"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        if [[ -s "$TMP_DIR/port" ]]; then
            port="$(<"$TMP_DIR/port")"
            if redis_ping 127.0.0.1 "$port"; then
                REDIS_URL="redis://127.0.0.1:$port/0"
                cat >&2 <<EOF
run.sh: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
run.sh: !!  EMBEDDED IN-MEMORY REDIS STAND-IN (fakeredis) on 127.0.0.1:$port -- NOTHING PERSISTS:
run.sh: !!  users, sessions and tokens are lost when this script stops.
run.sh: !!  Install redis-server or set REDIS_URL for a real Redis.
run.sh: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
                return 0
            fi
        fi
        sleep 0.1
    done
    die "the embedded Redis stand-in did not start"
}

choose_redis() {
    case "$LOCAL_REDIS" in
    auto)
        if [[ -n "${REDIS_URL:-}" ]]; then
            log "using REDIS_URL from the environment"
        elif redis_ping 127.0.0.1 6379; then
            REDIS_URL="redis://127.0.0.1:6379/0"
            log "using the Redis answering on 127.0.0.1:6379"
        elif command -v redis-server >/dev/null 2>&1; then
            start_private_redis
        else
            start_embedded_redis
        fi
        ;;
    private)
        [[ -z "${REDIS_URL:-}" ]] || log "LOCAL_REDIS=private: ignoring REDIS_URL"
        start_private_redis
        ;;
    embedded)
        [[ -z "${REDIS_URL:-}" ]] || log "LOCAL_REDIS=embedded: ignoring REDIS_URL"
        start_embedded_redis
        ;;
    esac
}

stop_pid() { # pid name: TERM, wait (bounded), then KILL its process group
    local pid=$1 name=$2 i
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop within ${STOP_TIMEOUT}s: killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    # A second Ctrl-C while gunicorn drains must not kill this shell before it has stopped
    # what it started (each stop is bounded by STOP_TIMEOUT, then KILL).
    trap - EXIT
    trap '' INT TERM HUP
    stop_pid "$GUNICORN_PID" gunicorn
    GUNICORN_PID=""
    stop_pid "$REDIS_PID" "$REDIS_KIND"
    REDIS_PID=""
    if [[ -n "$TMP_DIR" ]]; then
        rm -rf "$TMP_DIR"
    fi
}

dev_banner() {
    cat >&2 <<EOF
run.sh: ========================================================================
run.sh:  APP_ENV=development (the default of ./run.sh --local)
run.sh:   - JWT secret: ${JWT_SECRET:+from JWT_SECRET}${JWT_SECRET:-the built-in DEVELOPMENT secret (tokens are not safe)}
run.sh:   - demo user: kesa / 123
run.sh:  For anything real: APP_ENV=production JWT_SECRET=<32+ random bytes>
run.sh: ========================================================================
EOF
}

local_mode() {
    LOCAL_REDIS="${LOCAL_REDIS:-auto}"
    case "$LOCAL_REDIS" in
    auto | private | embedded) ;;
    *)
        printf 'run.sh: LOCAL_REDIS must be auto, private or embedded (got %q)\n' "$LOCAL_REDIS" >&2
        exit 2
        ;;
    esac
    PORT="${PORT:-9090}"
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "PORT must be a number (got '$PORT')"
    APP_ENV="${APP_ENV:-development}"
    export APP_ENV PORT

    trap cleanup EXIT
    trap 'exit 0' INT TERM
    trap 'exit 129' HUP

    ensure_venv
    mkdir -p "$DATA_DIR"
    DATA_DIR="$(cd "$DATA_DIR" && pwd)"
    choose_redis
    export REDIS_URL

    if [[ "$APP_ENV" == development ]]; then
        dev_banner
    fi
    log "serving on http://${BIND:-127.0.0.1:$PORT} (APP_ENV=$APP_ENV); Ctrl-C stops"
    start_bg "$VENV/bin/gunicorn" -c gunicorn.conf.py main:app
    GUNICORN_PID=$BG_PID
    log "gunicorn (pid $GUNICORN_PID) started"

    local rc=0
    wait "$GUNICORN_PID" || rc=$?
    GUNICORN_PID=""
    log "gunicorn exited (status $rc)"
    exit "$rc"
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
