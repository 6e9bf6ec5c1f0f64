#!/usr/bin/env bash
# Replace the Ray nodes of the running stack with the current node image, one at a time, losing no
# request under load: after a change of the lock file, the Dockerfile or a Ray patch.
#   scripts/roll.sh [--timeout SECONDS] [--skip-build]
# Each worker not on the image gets its replacement first (one more ray-worker container, which
# starts on the new image), is drained with Ray's node drain (Serve starts its replicas elsewhere
# before it stops them there), then is stopped and removed; the worker count ends as it began.
# The head goes last: workers and Serve outlive its restart (GCS fault tolerance, state in Redis).
# Then serve-deploy and ray-targets are recreated if their image changed. --timeout bounds each
# node (default 600 s); --skip-build rolls onto the image as it is. Exits non-zero naming what is
# not ready. Uses `docker compose` or `docker-compose`.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=roll
source scripts/lib.sh

usage="usage: scripts/roll.sh [--timeout SECONDS] [--skip-build]"
timeout=600
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --timeout) [ $# -ge 2 ] || die "$usage"; timeout=$2; shift 2 ;;
    --skip-build) build=0; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) die "unknown argument: $1 ($usage)" ;;
  esac
done
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout wants whole seconds, not '$timeout'"
dashboard_port=${RAY_DASHBOARD_PORT:-$(env_value RAY_DASHBOARD_PORT)}
api_port=${API_PORT:-$(env_value API_PORT)}
dashboard=http://127.0.0.1:${dashboard_port:-8265}
api=http://127.0.0.1:${api_port:-8000}
deploy_timeout=${DEPLOY_TIMEOUT_S:-$(env_value DEPLOY_TIMEOUT_S)}
started=$SECONDS

log "fast path, if requests may be lost: \`docker compose up -d --build\` recreates every node at once (requests in flight on the nodes are lost while they restart)"

roll() { python3 scripts/roll_nodes.py --dashboard "$dashboard" "$@"; }
name_of() { docker inspect --format '{{.Name}}' "$1" | sed 's|^/||'; }
image_of() { docker inspect --format '{{.Image}}' "$1"; }
# The ray-worker containers, running or not, in the order of compose's container numbers.
worker_containers() {
  local ids
  ids=$(compose ps -a -q ray-worker)
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086  # one id per word
  docker inspect --format '{{index .Config.Labels "com.docker.compose.container-number"}} {{.Id}}' \
    $ids | sort -n | cut -d' ' -f2
}
count_lines() { grep -c . || true; }
# The ray-worker containers into `workers`, and as `--worker ID` arguments into `args`.
load_workers() {
  local w
  workers=()
  args=()
  while IFS= read -r w; do
    workers+=("$w")
    args+=(--worker "$w")
  done < <(worker_containers)
}

if [ "$build" = 1 ]; then
  log "building the images (from cache when nothing changed) ..."
  compose build || die "image build failed"
fi
config=$(compose config) || die "docker compose config failed"
node_image=$(printf '%s\n' "$config" | python3 scripts/roll_nodes.py image ray-worker) \
  || die "cannot tell the ray-worker service's image from docker compose config"
image_id=$(docker image inspect --format '{{.Id}}' "$node_image" 2>/dev/null) \
  || die "no image $node_image here: build it (scripts/up.sh, or run this without --skip-build)"
log "the Ray nodes should run $node_image = $image_id"

head=$(compose ps -q ray-head)
[ -n "$head" ] || die "ray-head is not running: start the stack first (scripts/up.sh)"
load_workers
count=${#workers[@]}
[ "$count" -gt 0 ] || die "no ray-worker container: start the stack first (scripts/up.sh)"
token=$(stack_token) || die "could not read the Ray token from ray-head"
export RAY_AUTH_TOKEN=$token

log "checking that the cluster is ready: 1 head + $count workers, Serve RUNNING, the API up ..."
apps=$(roll ready --head "$head" "${args[@]}" --api "$api" --timeout 120) \
  || die "the cluster is not ready before the roll (above): bring it up first (scripts/up.sh)"
want_apps=()
[ "$apps" = "[]" ] || want_apps=(--apps)  # after the head's restart, wait until Serve has them

old=()
for w in "${workers[@]}"; do
  [ "$(image_of "$w")" = "$image_id" ] || old+=("$w")
done
head_old=0
head_note="already runs it"
if [ "$(image_of "$head")" != "$image_id" ]; then
  head_old=1
  head_note="too (it goes last)"
fi
log "$count worker(s), ${#old[@]} on another image; the head $head_note"

replaced=0
i=0
for w in ${old[@]+"${old[@]}"}; do
  i=$((i + 1))
  step="worker $i/${#old[@]}"
  name=$(name_of "$w")
  # a. The replacement first: one container more, on the current image; --no-recreate keeps the
  #    others as they are, --no-deps leaves the head alone, --no-build keeps the image as tagged.
  before=$(compose ps -a -q ray-worker | sort)
  n=$(printf '%s\n' "$before" | count_lines)
  baseline=$(roll replicas) || die "$step: Serve's API did not answer at $dashboard"
  log "$step: starting a replacement for $name (ray-worker scaled to $((n + 1))) ..."
  compose up -d --no-deps --no-recreate --no-build --scale "ray-worker=$((n + 1))" ray-worker \
    || die "$step: could not start a replacement worker"
  new=$(comm -13 <(printf '%s\n' "$before") <(compose ps -a -q ray-worker | sort))
  [ "$(printf '%s\n' "$new" | count_lines)" = 1 ] \
    || die "$step: expected one new ray-worker container, found: ${new:-none}"
  new_name=$(name_of "$new")
  [ "$(image_of "$new")" = "$image_id" ] \
    || die "$step: the replacement $new_name runs $(image_of "$new"), not $image_id"
  log "$step: waiting until $new_name is healthy and its Ray node ALIVE ..."
  if ! roll joined --container "$new" --timeout "$timeout" >/dev/null; then
    docker logs --tail 30 "$new" >&2 || true
    docker rm -f "$new" >/dev/null || true
    die "$step: the replacement $new_name did not join in ${timeout}s (above); it was removed, $name still serves"
  fi

  # b. Drain the old node: Ray schedules nothing new there; Serve starts its replicas elsewhere,
  #    then stops them there. No deadline: Serve then stops a replica there only once its
  #    replacement runs, so a roll that finds no room fails with every replica still serving.
  node=$(roll node-id --container "$w") || die "$step: $name has no ALIVE Ray node (above)"
  log "$step: draining $name (Ray node $node) ..."
  roll drain --container "$w" --node-id "$node" \
    || die "$step: Ray did not accept the drain of $name (above); $new_name joined and stays"

  # c. Every replica off the old node and RUNNING elsewhere, then its container goes.
  log "$step: waiting until every Serve deployment runs its replicas off $name ..."
  roll migrate --container "$w" --node-id "$node" --baseline "$baseline" --timeout "$timeout" \
    || die "$step: Serve's replicas did not leave $name in ${timeout}s (above). It stays, draining \
and serving what found no room elsewhere; $new_name joined and stays. Make room (fewer replicas, \
or one more worker), then rerun scripts/roll.sh --skip-build"
  log "$step: stopping and removing $name ..."
  docker stop -t 60 "$w" >/dev/null || die "$step: docker stop $name failed"
  docker rm "$w" >/dev/null || die "$step: docker rm $name failed"
  now=$(compose ps -a -q ray-worker | count_lines)
  [ "$now" = "$count" ] || die "$step: $now ray-worker containers after the swap, expected $count"
  replaced=$((replaced + 1))
  log "$step: $new_name replaced $name"
done

if [ "$head_old" = 1 ]; then
  log "head: recreating ray-head on the new image (the workers and Serve keep serving) ..."
  compose up -d --no-deps --no-build --force-recreate --timeout 60 ray-head \
    || die "head: could not recreate ray-head"
  head=$(compose ps -q ray-head)
  [ -n "$head" ] || die "head: no ray-head container after the recreate (docker compose ps -a)"
  load_workers
  log "head: waiting until it is healthy, every node ALIVE and every application RUNNING ..."
  roll ready --head "$head" "${args[@]}" ${want_apps[@]+"${want_apps[@]}"} --api "$api" \
    --timeout "$timeout" >/dev/null \
    || die "head: the cluster did not settle in ${timeout}s after the head's restart (above)"
  [ "$(image_of "$head")" = "$image_id" ] \
    || die "head: $(name_of "$head") runs $(image_of "$head"), not $image_id"
  replaced=$((replaced + 1))
  log "head: $(name_of "$head") runs the new image"
fi

# The other services on a Ray image, recreated only if their image changed; never a node again.
changed=()
for service in serve-deploy ray-targets; do
  container=$(compose ps -a -q "$service")
  container=${container%%$'\n'*}
  [ -n "$container" ] || continue
  image=$(printf '%s\n' "$config" | python3 scripts/roll_nodes.py image "$service") || continue
  want=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) || continue
  [ "$(image_of "$container")" = "$want" ] || changed+=("$service")
done
if [ ${#changed[@]} -gt 0 ]; then
  log "recreating ${changed[*]} (their image changed) ..."
  compose up -d --no-deps --no-build "${changed[@]}" || die "could not recreate ${changed[*]}"
  if [[ " ${changed[*]} " == *" serve-deploy "* ]]; then
    deploy=$(compose ps -a -q serve-deploy)
    python3 scripts/wait_ready.py --workers "$count" --timeout $(( ${deploy_timeout:-900} + 60 )) \
      --deploy-container "${deploy%%$'\n'*}" --api "$api" --dashboard "$dashboard" \
      || die "serve-deploy did not apply the Serve config (docker compose logs serve-deploy)"
  fi
fi

if [ "$replaced" = 0 ]; then
  log "every Ray node already runs $image_id: nothing to roll ($((SECONDS - started)) s)"
else
  what="$((replaced - head_old)) worker(s)"
  [ "$head_old" = 0 ] || what="$what and the head"
  log "rolled $replaced node(s) ($what) onto $image_id in $((SECONDS - started)) s"
fi
