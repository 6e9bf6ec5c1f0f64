#!/usr/bin/env bash
# Bring the stack up and return only when every node joined and serve-deploy applied the current
# Serve config, RUNNING. The convenient path: plain `docker compose up -d` starts the same stack.
#   scripts/up.sh [--workers N] [--timeout SECONDS]
# --timeout defaults to DEPLOY_TIMEOUT_S (environment, else .env, else 900) plus a minute. Exits
# non-zero, naming what is not ready, otherwise; at once when serve-deploy fails, with its error.
# Uses `docker compose` or `docker-compose`.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=up
source scripts/lib.sh

workers=${RAY_WORKERS:-$(env_value RAY_WORKERS)}
workers=${workers:-2}
deploy_timeout=${DEPLOY_TIMEOUT_S:-$(env_value DEPLOY_TIMEOUT_S)}
timeout=$(( ${deploy_timeout:-900} + 60 ))
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) die "unknown argument: $1 (usage: scripts/up.sh [--workers N] [--timeout SECONDS])" ;;
  esac
done
api_port=${API_PORT:-$(env_value API_PORT)}
dashboard_port=${RAY_DASHBOARD_PORT:-$(env_value RAY_DASHBOARD_PORT)}

no_registry_hint() {
  log "if Docker could not reach a registry above (no such host, pull access denied, i/o timeout)," >&2
  log "this machine has none: scripts/airgap-prepare.sh builds local stand-ins, then rerun this." >&2
}

log "building the node and application images (cached after the first time) ..."
compose build models ray-head || { no_registry_hint; die "image build failed"; }
log "starting the stack with $workers worker(s) (the first start also fetches the models) ..."
if ! compose up -d --scale "ray-worker=$workers"; then
  compose ps -a >&2 || true
  compose logs --tail 20 secrets models >&2 || true
  no_registry_hint
  die "docker compose up failed"
fi

token=$(stack_token) || die "could not read the Ray token from ray-head (docker compose ps shows why)"
deploy_container=$(compose ps -a -q serve-deploy)
[ -n "$deploy_container" ] || die "no serve-deploy container (docker compose ps -a shows why)"
serve_config=${SERVE_CONFIG:-$(env_value SERVE_CONFIG)}
log "waiting until the cluster is ready and serve-deploy applied ${serve_config:-serve/serve_config.yaml} ..."
if ! RAY_AUTH_TOKEN=$token python3 scripts/wait_ready.py --workers "$workers" \
    --timeout "$timeout" --deploy-container "$deploy_container" \
    --api "http://127.0.0.1:${api_port:-8000}" \
    --dashboard "http://127.0.0.1:${dashboard_port:-8265}"; then
  compose ps >&2 || true
  log "last lines of serve-deploy (full: docker compose logs serve-deploy):" >&2
  compose logs --tail 30 serve-deploy >&2 || true
  die "stack not ready"
fi
grafana_port=${GRAFANA_PORT:-$(env_value GRAFANA_PORT)}
prometheus_port=${PROMETHEUS_PORT:-$(env_value PROMETHEUS_PORT)}
alertmanager_port=${ALERTMANAGER_PORT:-$(env_value ALERTMANAGER_PORT)}
log "API http://127.0.0.1:${api_port:-8000}  Ray dashboard http://127.0.0.1:${dashboard_port:-8265}"
if [[ "${COMPOSE_FILE:-$(env_value COMPOSE_FILE)}" == *compose.airgap.yaml* ]]; then
  log "Prometheus http://127.0.0.1:${prometheus_port:-9090}  (no Grafana on an air-gapped machine)"
else
  log "Grafana http://127.0.0.1:${grafana_port:-3000}  Prometheus http://127.0.0.1:${prometheus_port:-9090}"
fi
log "Alertmanager http://127.0.0.1:${alertmanager_port:-9093}"
log "Ray token: docker compose exec ray-head cat /run/secrets/ray_auth_token"
