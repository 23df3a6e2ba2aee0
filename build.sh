#!/usr/bin/env bash
# Build the flask-jwt-redis image (multi-stage Dockerfile: debian:12-slim -> distroless python3),
# then prune the dangling images the build stage leaves behind, as the tutorial's script does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

IMAGE=flask-jwt-redis:latest

case "${1:-}" in
"") ;;
-h | --help)
    echo "Usage: ./build.sh    builds $IMAGE from ./Dockerfile, then runs 'docker image prune -f'"
    exit 0
    ;;
*)
    echo "build.sh: unknown argument: $1 (usage: ./build.sh)" >&2
    exit 2
    ;;
esac

if ! command -v docker >/dev/null 2>&1; then
    echo "build.sh: error: docker is not installed (or not on PATH); nothing was built" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "build.sh: error: no Docker engine answers ('docker info' failed): start Docker and retry; nothing was built" >&2
    exit 1
fi

echo "build.sh: building $IMAGE" >&2
docker build -t "$IMAGE" .
echo "build.sh: pruning this project's dangling images (build-stage and replaced ones; others are left alone)" >&2
docker image prune -f --filter "label=org.opencontainers.image.title=flask-jwt-redis"
echo "build.sh: done; start it with ./run.sh --docker" >&2
