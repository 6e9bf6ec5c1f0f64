# Shared by the bash entry points in scripts/: logging and the compose command of this machine.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "${LOG_TAG:-stack}" "$*"; }
die() { printf '[%s] ERROR: %s\n' "${LOG_TAG:-stack}" "$*" >&2; exit 1; }

# `docker compose` (v2 plugin) when present, else `docker-compose` (v1).
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose "$@"
  else
    die "neither 'docker compose' nor 'docker-compose' is installed"
  fi
}

# Create .env from .env.example on first use (compose reads it for every variable), with a random
# Grafana admin password and Ray auth token unless they are set.
ensure_env_file() {
  if [ ! -f .env ]; then
    cp .env.example .env
    log "created .env from .env.example (edit it to change ports, workers, passwords)"
  fi
  if [ -z "$(env_value GRAFANA_ADMIN_PASSWORD)" ]; then
    set_env GRAFANA_ADMIN_PASSWORD "$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
    log "generated GRAFANA_ADMIN_PASSWORD in .env"
  fi
  if [ -z "$(env_value RAY_AUTH_TOKEN)" ]; then
    set_env RAY_AUTH_TOKEN "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    log "generated RAY_AUTH_TOKEN in .env"
  fi
  if [ -z "$(env_value REDIS_PASSWORD)" ]; then
    set_env REDIS_PASSWORD "$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    log "generated REDIS_PASSWORD in .env"
  fi
}

# Read KEY from .env (empty when unset).
env_value() {
  sed -n "s/^$1=//p" .env 2>/dev/null | tail -n 1
}

# Set KEY=VALUE in .env, replacing an existing line.
set_env() {
  local key=$1 value=$2
  if grep -q "^${key}=" .env; then
    local escaped
    escaped=$(printf '%s' "$value" | sed 's/[&|\\]/\\&/g')
    sed -i "s|^${key}=.*|${key}=${escaped}|" .env
  else
    printf '%s=%s\n' "$key" "$value" >> .env
  fi
}

# The project's Python environment (.venv from requirements-dev.lock), created when missing or
# when the lock changed.
ensure_venv() {
  local venv=${VENV:-.venv}
  if [ ! -x "$venv/bin/python" ] || ! cmp -s requirements-dev.lock "$venv/.installed-lock"; then
    log "installing requirements-dev.lock into $venv ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.lock \
      2> >(grep -v '^WARNING: Location' >&2)
    cp requirements-dev.lock "$venv/.installed-lock"
  fi
}
