#!/usr/bin/env bash
# Build the flask-jwt-redis image (multi-stage Dockerfile: debian:12-slim -> distroless python3),
# then prune this project's dangling images, as the tutorial's script does.
#
#   ./build.sh [docker build options]     e.g. ./build.sh --network host --pull
#
# The build stage is kept under its own tag (flask-jwt-redis:build): untagged, the legacy
# builder would leave it dangling and the prune would delete the cached dependency layer, so
# every build would reinstall requirements.txt (and fail offline).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

IMAGE=flask-jwt-redis:latest
BUILD_STAGE=flask-jwt-redis:build
LABEL=org.opencontainers.image.title=flask-jwt-redis

case "${1:-}" in
-h | --help)
    cat <<USAGE
Usage: ./build.sh [docker build options]
  Builds $IMAGE from ./Dockerfile (the build stage is tagged $BUILD_STAGE, so its
  layers stay cached), then prunes this project's dangling images. Options are passed to
  both 'docker build' calls, e.g. --network host, --build-arg HTTPS_PROXY, --pull.
USAGE
    exit 0
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
docker build "$@" --target build -t "$BUILD_STAGE" .
docker build "$@" -t "$IMAGE" .
echo "build.sh: pruning this project's dangling images (replaced ones; others are left alone)" >&2
docker image prune -f --filter "label=$LABEL"
echo "build.sh: done; start it with ./run.sh --docker" >&2
