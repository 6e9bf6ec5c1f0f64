#!/usr/bin/env bash
# Make scripts/up.sh work where no container registry or model hub is reachable (CI):
#   1. a Debian-based Python 3.11 base image, built from Debian packages (debootstrap)
#   2. Prometheus, Redis, HAProxy and Alertmanager images from Debian's `prometheus`,
#      `redis-server`, `haproxy` and `prometheus-alertmanager` packages
#   3. a wheelhouse of requirements.lock, so the Ray image builds without a package index
#   4. architecture-faithful local models (scripts/make_test_models.py --size full)
#   5. .env pointing compose at all of the above; Grafana (no such package) is left out
# Idempotent and cached: each step is skipped when its result is already there. Downloads and
# models live in AIRGAP_CACHE_DIR (default ~/.cache/ray-serve-cluster), outside the checkout, so
# fresh clones on the same machine reuse them; images stay in Docker's own storage.
# Needs root (debootstrap), docker, and Debian's package mirror (DEBIAN_MIRROR).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=airgap
source scripts/lib.sh

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${AIRGAP_CACHE_DIR:-$HOME/.cache/ray-serve-cluster}
PYTHON_IMAGE=ray-serve-cluster/python:3.11-bookworm
PROMETHEUS_IMAGE=ray-serve-cluster/prometheus:2.42-bookworm
REDIS_IMAGE=ray-serve-cluster/redis:7.0-bookworm
LB_IMAGE=ray-serve-cluster/haproxy:2.6-bookworm
ALERTMANAGER_IMAGE=ray-serve-cluster/alertmanager:0.25-bookworm
WHEELS=$CACHE/wheels
WHEELHOUSE=images/wheelhouse   # the copy inside the Docker build context
MODELS=$CACHE/models/full
mkdir -p "$CACHE" "$WHEELS"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# 1. Python base image -------------------------------------------------------------------------
if have_image "$PYTHON_IMAGE"; then
  log "1/5 $PYTHON_IMAGE: present, kept"
else
  rootfs=$CACHE/rootfs-python
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    rm -rf "$rootfs"
    log "1/5 debootstrap bookworm (python3, python3-venv) from $MIRROR (about a minute) ..."
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $CACHE/debootstrap.log"
  fi
  log "1/5 importing $rootfs as $PYTHON_IMAGE ..."
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$PYTHON_IMAGE" >/dev/null
fi

# 2. Prometheus, Redis, HAProxy and Alertmanager images -------------------------------------
# Kept while built from the same Dockerfile (a label holds its hash), rebuilt when it changed.
build_debian_image() {  # IMAGE DOCKERFILE PACKAGE
  local want have
  want=$(sha256sum "$2" | cut -c1-16)
  have=$(docker image inspect -f '{{index .Config.Labels "ray-serve-cluster.dockerfile"}}' "$1" \
    2>/dev/null || true)
  if [ "$have" = "$want" ]; then
    log "2/5 $1: present, kept"
  else
    log "2/5 building $1 from Debian's $3 package ($2) ..."
    docker build --quiet --build-arg "BASE_IMAGE=$PYTHON_IMAGE" \
      --label "ray-serve-cluster.dockerfile=$want" -t "$1" -f "$2" images/ >/dev/null
  fi
}
build_debian_image "$PROMETHEUS_IMAGE" images/prometheus-debian.Dockerfile prometheus
build_debian_image "$REDIS_IMAGE" images/redis-debian.Dockerfile redis-server
build_debian_image "$LB_IMAGE" images/haproxy-debian.Dockerfile haproxy
build_debian_image "$ALERTMANAGER_IMAGE" images/alertmanager-debian.Dockerfile prometheus-alertmanager

# 3. Wheelhouse --------------------------------------------------------------------------------
want=$(sha256sum requirements.lock | cut -d' ' -f1)
wheels=$WHEELS/$want
if [ -f "$wheels/.done" ]; then
  log "3/5 wheels of requirements.lock: present in $wheels, kept"
else
  log "3/5 downloading the wheels of requirements.lock into $wheels ..."
  mkdir -p "$wheels"
  pip_offline_cpu_index
  python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    -r requirements.lock -d "$wheels" 2> >(pip_noise)
  touch "$wheels/.done"
fi
# Into the Docker build context; hard links where possible, so no extra space.
find "$WHEELHOUSE" -name '*.whl' -delete
cp -l "$wheels"/*.whl "$WHEELHOUSE"/ 2>/dev/null || cp "$wheels"/*.whl "$WHEELHOUSE"/

# 4. Local models ------------------------------------------------------------------------------
ensure_venv
log "4/5 stand-in models in $MODELS ..."
HF_HUB_OFFLINE=1 "${VENV:-.venv}/bin/python" scripts/make_test_models.py --size full --out "$MODELS" \
  2> >(grep -v -E 'Writing model shards|Loading weights|^$' >&2)
chmod -R a+rX "$MODELS"

# 5. .env --------------------------------------------------------------------------------------
ensure_env_file
set_env COMPOSE_FILE compose.yaml:compose.airgap.yaml
set_env PYTHON_BASE_IMAGE "$PYTHON_IMAGE"
set_env PIP_INSTALL_ARGS "--no-index --find-links /wheels"
set_env PROMETHEUS_IMAGE "$PROMETHEUS_IMAGE"
set_env REDIS_IMAGE "$REDIS_IMAGE"
set_env LB_IMAGE "$LB_IMAGE"
set_env ALERTMANAGER_IMAGE "$ALERTMANAGER_IMAGE"
set_env MODELS_VOLUME "$MODELS"
log "5/5 .env points compose at the local images, wheelhouse and models; Grafana is left out"
