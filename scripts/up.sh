#!/usr/bin/env bash
# Bring the stack up and return only when every node joined and the Serve application is RUNNING.
#   scripts/up.sh [--workers N] [--timeout SECONDS]
# Exits non-zero, naming what is not ready, otherwise. Uses `docker compose` or `docker-compose`.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=up
source scripts/lib.sh

ensure_env_file
workers=$(env_value RAY_WORKERS)
workers=${workers:-2}
timeout=900
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) die "unknown argument: $1 (usage: scripts/up.sh [--workers N] [--timeout SECONDS])" ;;
  esac
done
api_port=$(env_value API_PORT)
dashboard_port=$(env_value RAY_DASHBOARD_PORT)

log "building the Ray image (cached after the first time) ..."
compose build models
log "starting the stack with $workers worker(s) ..."
compose up -d --scale "ray-worker=$workers"

log "waiting until the cluster and the Serve application are ready ..."
if ! RAY_AUTH_TOKEN=$(env_value RAY_AUTH_TOKEN) python3 scripts/wait_ready.py --workers "$workers" --timeout "$timeout" \
    --api "http://127.0.0.1:${api_port:-8000}" \
    --dashboard "http://127.0.0.1:${dashboard_port:-8265}"; then
  compose ps >&2 || true
  log "last lines of serve-deploy (full: docker compose logs serve-deploy):" >&2
  compose logs --tail 30 serve-deploy >&2 || true
  die "stack not ready"
fi
log "API http://127.0.0.1:${api_port:-8000}  Ray dashboard http://127.0.0.1:${dashboard_port:-8265}"
