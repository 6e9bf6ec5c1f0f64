#!/usr/bin/env bash
# Remove everything the stack started, in every profile (the optional `locust` and, on air-gapped
# machines, `grafana`): containers, the network and the volumes (the secrets, the GCS state in
# Redis, Prometheus's data; models fetched into the `models` volume are fetched again next time).
# Built images are kept as build cache. `docker compose down` without `-v` keeps the volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=down
source scripts/lib.sh

log "removing the stack's containers, network and volumes ..."
# 10 s to stop: what the nodes hold goes with the volumes anyway (compose stops them level by
# level of depends_on, and a Ray node spends the whole timeout).
compose --profile load --profile grafana down --volumes --remove-orphans --timeout 10
