#!/usr/bin/env bash
# The test command: builds .venv from the pinned requirements when needed, lints, then runs
# pytest. Extra arguments go to pytest (./test.sh -k refresh -x).
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
stamp=.venv/.requirements-dev.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "test.sh: installing the pinned test environment into .venv" >&2
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/shellcheck run.sh build.sh test.sh .ci/run
# Security lint of the service's code: fail on medium severity or more (accepted low findings
# carry a "nosec" comment with the reason).
.venv/bin/bandit --quiet --severity-level medium --recursive \
  api initialize middleware routers utils global_state main.py gunicorn.conf.py
exec .venv/bin/python -m pytest "$@"
