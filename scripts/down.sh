#!/usr/bin/env bash
# Remove everything scripts/up.sh started: containers, the network and the volumes (models fetched
# into the `models` volume are fetched again next time). Built images are kept as build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=down
source scripts/lib.sh

ensure_env_file
log "removing the stack's containers, network and volumes ..."
compose --profile grafana down --volumes --remove-orphans --timeout 30
