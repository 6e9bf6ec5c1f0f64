#!/usr/bin/env bash
# Run every test tier: lint (ruff, hadolint, bandit), unit (no Ray), integration (a local
# multi-node Ray cluster), e2e (the compose stack, through scripts/up.sh). Extra arguments go to
# pytest, e.g. `scripts/test.sh tests/unit -x`. E2E_REQUIRED=1 (set by .ci/run) turns a skipped
# e2e test into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=test
source scripts/lib.sh

ensure_venv
VENV=${VENV:-.venv}

log "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

log "hadolint, bandit"
"$VENV/bin/hadolint" --failure-threshold info images/*.Dockerfile
"$VENV/bin/bandit" --quiet --configfile pyproject.toml --recursive .

log "pytest $*"
exec "$VENV/bin/pytest" "$@"
