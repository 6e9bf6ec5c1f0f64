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

# Create .env from .env.example when missing (scripts/airgap-prepare.sh writes its settings there),
# readable by its owner only: it may hold secrets. Run under sudo, it is handed to the user who
# ran sudo, so that compose and scripts/up.sh can read it afterwards.
ensure_env_file() {
  if [ ! -f .env ]; then
    (umask 077 && cp .env.example .env)
    log "created .env from .env.example (edit it to change ports, workers, images)"
  fi
  if [ -O .env ]; then
    chmod go-rwx .env
  fi
  if [ "$(id -u)" = 0 ] && [ -n "${SUDO_UID:-}" ]; then
    chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" .env
  fi
}

# The stack's Ray token, as the secrets service stored it (the head must be running).
stack_token() {
  compose exec -T ray-head cat /run/secrets/ray_auth_token
}

# Where PyTorch's CPU wheel index (named in the lock files) cannot be reached, as on machines with
# only a PyPI mirror, pip would retry it five times per package: let it fail over at once instead.
pip_offline_cpu_index() {
  if ! python3 -c 'import urllib.request as u; u.urlopen("https://download.pytorch.org/whl/cpu/", timeout=5)' \
      >/dev/null 2>&1; then
    export PIP_RETRIES=0
    log "download.pytorch.org is not reachable: pip takes torch from the other configured indexes"
  fi
}

# pip's warnings about indexes and find-links folders this machine lacks, filtered from stderr.
pip_noise() { grep -v -E '^WARNING: (Location|Retrying)|download\.pytorch\.org' >&2; }

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
    pip_offline_cpu_index
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.lock \
      2> >(pip_noise)
    cp requirements-dev.lock "$venv/.installed-lock"
  fi
}
