#!/usr/bin/env bash
# Run every test tier: lint, unit (no Ray), integration (a local multi-node Ray cluster),
# e2e (the compose stack). Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
# E2E_REQUIRED=1 (set by .ci/run) turns a skipped e2e test into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/pytest" ] || ! cmp -s requirements-dev.lock "$VENV/.installed-lock"; then
  echo "[test] installing requirements-dev.lock into $VENV ..."
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.lock
  cp requirements-dev.lock "$VENV/.installed-lock"
fi

echo "[test] ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

echo "[test] pytest $*"
exec "$VENV/bin/pytest" "$@"
