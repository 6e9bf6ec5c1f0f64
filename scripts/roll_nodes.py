"""The waits and Ray calls of scripts/roll.sh, which replaces the stack's Ray nodes one at a time.

Standard library only, like scripts/wait_ready.py: it runs on the host with its own Python 3. Each
subcommand prints progress on stderr and its result, if any, on stdout; it exits 1 naming what is
not ready, or not done, when its timeout passes.

    compose config | python3 scripts/roll_nodes.py image ray-worker
    RAY_AUTH_TOKEN=... python3 scripts/roll_nodes.py --dashboard URL ready --head C --worker C
    ... joined --container C --timeout 600          # prints the Ray node id once it is ALIVE
    ... node-id --container C                       # the ALIVE Ray node of a container
    ... replicas                                    # RUNNING replicas per deployment, as JSON
    ... drain --container C --node-id ID --deadline 600
    ... migrate --container C --node-id ID --baseline JSON --timeout 600

A container's Ray node is the ALIVE node whose `node_ip` is one of the container's addresses, or
its host name: the head advertises `ray-head` where the stack is opened to other hosts
(compose.cluster.yaml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ray_auth import request

GCS_ADDRESS = "ray-head:6379"  # the head's GCS, as every node of the stack reaches it
# Serve's replicas on a drained node that have nowhere to go (the cluster is at capacity) are
# stopped, gracefully, once every deployment has kept this long at least as many RUNNING
# replicas elsewhere as it had before the roll (see migration()).
SETTLE_S = 30
# After the node is empty: how long to wait for its ingress to leave (Ray node gone, or Serve's
# proxy there no longer HEALTHY), then how long `lb` needs to take it out of rotation (health
# checks every 2 s, out after 2 failures 500 ms apart).
QUIET_S = 30
LB_GRACE_S = 5


def log(message: str) -> None:
    print(f"[roll] {message}", file=sys.stderr, flush=True)


def get_json(url: str) -> dict | None:
    """GET a Ray dashboard URL with the stack's token; None when it does not answer 200."""
    try:
        # The http URL of the stack's own dashboard, given by roll.sh.
        with urllib.request.urlopen(request(url), timeout=10) as resp:  # nosec B310
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # nosec B310
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def alive_nodes(dashboard: str) -> list[dict] | None:
    """The ALIVE Ray nodes, or None when the dashboard does not answer."""
    body = get_json(f"{dashboard}/api/v0/nodes?limit=1000")
    if body is None:
        return None
    try:
        nodes = body["data"]["result"]["result"]
    except (KeyError, TypeError):
        return None
    return [n for n in nodes if n.get("state") == "ALIVE"]


def serve_details(dashboard: str) -> dict | None:
    """Serve's instance details (applications, proxies), or None when the API does not answer."""
    body = get_json(f"{dashboard}/api/serve/applications/")
    if body is None or not isinstance(body.get("applications"), dict):
        return None
    return body


@dataclass
class Container:
    """What roll.sh needs of a container: its name, state, health and addresses."""

    id: str
    name: str
    status: str  # Docker's: running, restarting, exited, ...
    health: str  # healthy, starting, unhealthy; empty without a healthcheck
    exit_code: int
    ips: set[str] = field(default_factory=set)  # its addresses and its host name
    health_output: str = ""

    @classmethod
    def inspect(cls, container: str) -> Container:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            return cls(container, container[:12], "missing", "", -1)
        info = json.loads(out.stdout)[0]
        state = info["State"]
        health = state.get("Health") or {}
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        checks = health.get("Log") or [{}]
        return cls(
            id=info["Id"],
            name=info["Name"].lstrip("/"),
            status=state["Status"],
            health=health.get("Status", ""),
            exit_code=state.get("ExitCode", 0),
            ips={net["IPAddress"] for net in networks.values() if net.get("IPAddress")}
            | {(info.get("Config") or {}).get("Hostname") or info["Id"][:12]},
            health_output=(checks[-1].get("Output") or "").strip()[-300:],
        )


def node_of(container: Container, nodes: list[dict]) -> dict | None:
    """The container's ALIVE Ray node (the newest, should a stale one share its address)."""
    mine = [n for n in nodes if n.get("node_ip") in container.ips]
    return max(mine, key=lambda n: n.get("start_time_ms") or 0) if mine else None


def service_image(config: str, service: str) -> str | None:
    """The `image:` of `service` in `docker compose config`'s output. Both Compose v2 and
    docker-compose 1.29 print `services:` at the left margin, one indented block per service and
    its keys one level deeper; read without a YAML parser, which the host's Python may lack."""
    in_services = False
    service_indent: int | None = None
    key_indent: int | None = None
    current = None
    for line in config.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            in_services, current = text == "services:", None
            continue
        if not in_services:
            continue
        if service_indent is None:
            service_indent = indent
        if indent == service_indent:
            current, key_indent = text.rstrip(":").strip("'\""), None
        elif current == service:
            key_indent = key_indent or indent
            if indent == key_indent and text.startswith("image:"):
                return text.split(":", 1)[1].strip().strip("'\"")
    return None


def running_replicas(details: dict) -> dict[str, int]:
    """RUNNING replicas per deployment, keyed `application/deployment`."""
    return {
        f"{app_name}/{name}": sum(r.get("state") == "RUNNING" for r in dep.get("replicas", []))
        for app_name, app in details["applications"].items()
        for name, dep in (app.get("deployments") or {}).items()
    }


@dataclass
class Migration:
    """Where Serve stands in moving its replicas off a draining node."""

    left: list[str]  # replicas still on the node, with their state
    short: list[str]  # deployments with fewer RUNNING replicas elsewhere than their target
    below: list[str]  # deployments with fewer RUNNING elsewhere than before the roll (capped)
    grown: list[str] = field(default_factory=list)  # targets above their count before the roll

    def hint(self) -> str:
        """Why replicas may wait for room: the autoscaler raised a target during the roll, and
        the new replicas took the room the replacement node brought."""
        if not (self.below and self.grown):
            return ""
        return (
            f" (autoscaling asked for more since the roll began: {', '.join(self.grown)}; "
            "the replicas above wait until Serve finds room: lighter load, or one more worker)"
        )

    @property
    def empty(self) -> bool:
        return not self.left


def migration(details: dict, node_id: str, baseline: dict[str, int]) -> Migration:
    """Compare every deployment's replicas off `node_id` with its target and with `baseline`,
    its RUNNING replicas before the replacement node joined. At capacity a target can be out of
    reach while the node drains (the autoscaler may have given the replacement's room to a new
    replica); the baseline, capped by the target, is what the cluster held before the roll."""
    left: list[str] = []
    short: list[str] = []
    below: list[str] = []
    grown: list[str] = []
    for app_name, app in details["applications"].items():
        for name, dep in (app.get("deployments") or {}).items():
            key = f"{app_name}/{name}"
            replicas = dep.get("replicas") or []
            left += [
                f"{key} {r.get('replica_id', '?')} {r.get('state')}"
                for r in replicas
                if r.get("node_id") == node_id
            ]
            elsewhere = sum(
                r.get("state") == "RUNNING" and r.get("node_id") != node_id for r in replicas
            )
            target = dep.get("target_num_replicas")
            if target is None:
                target = baseline.get(key, elsewhere)
            floor = min(target, baseline.get(key, target))
            if elsewhere < target:
                short.append(f"{key} {elsewhere}/{target} RUNNING")
            if elsewhere < floor:
                below.append(f"{key} {elsewhere}/{floor} RUNNING")
            if key in baseline and target > baseline[key]:
                grown.append(f"{key} {baseline[key]} -> {target}")
    return Migration(left, short, below, grown)


def drain(container: str, node_id: str, deadline_s: int | None = None) -> bool:
    """`ray drain-node` inside `container` (its RAY_AUTH_TOKEN_PATH authenticates it): the GCS
    marks the node draining, Ray schedules nothing new there, and Serve starts the node's
    replicas elsewhere before stopping them. Without a deadline Serve stops a replica there only
    once its replacement runs; at the deadline it stops them whether or not they found room.
    Draining again replaces the deadline."""
    deadline = [] if deadline_s is None else ["--deadline-remaining-seconds", str(deadline_s)]
    out = subprocess.run(
        ["docker", "exec", container, "ray", "drain-node", "--address", GCS_ADDRESS,
         "--node-id", node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
         "--reason-message", "rolling image update", *deadline],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        log(f"ray drain-node failed: {(out.stderr or out.stdout).strip()[-800:]}")
    return out.returncode == 0


class Progress:
    """Prints what is still awaited when it changes, else every 30 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = ""
        self.printed = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def show(self, line: str) -> None:
        if line != self.last or self.elapsed - self.printed >= 30:
            log(f"{self.elapsed:4.0f}s waiting for: {line}")
            self.last, self.printed = line, self.elapsed


def cluster_missing(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """What keeps the cluster from being ready, and the Serve applications it runs."""
    missing: list[str] = []
    head = Container.inspect(args.head)
    if head.health != "healthy":
        missing.append(f"{head.name} healthy (it is {head.health or head.status})")
    workers = [Container.inspect(w) for w in args.worker]
    missing += [f"{w.name} running (it is {w.status})" for w in workers if w.status != "running"]
    nodes = alive_nodes(args.dashboard)
    if nodes is None:
        missing.append(f"the Ray dashboard at {args.dashboard}")
        return missing, []
    head_node = node_of(head, nodes)
    if not (head_node and head_node.get("is_head_node")):
        missing.append(f"the Ray head node of {head.name} ALIVE")
    missing += [f"the Ray node of {w.name} ALIVE" for w in workers if not node_of(w, nodes)]
    details = serve_details(args.dashboard)
    if details is None:
        missing.append("Serve's API (the controller is not back yet)")
        return missing, []
    apps = details["applications"]
    if args.apps and not apps:  # a restarted head's Serve controller restores them all at once
        missing.append("Serve's applications (none back yet)")
    missing += [
        f"application {name!r} RUNNING (it is {app.get('status')})"
        for name, app in apps.items()
        if app.get("status") != "RUNNING"
    ]
    if args.api and http_status(f"{args.api}/-/healthz") != 200:
        missing.append(f"the API at {args.api}/-/healthz")
    return missing, sorted(apps)


def cmd_ready(args: argparse.Namespace) -> int:
    """Wait until the head is healthy, every node ALIVE, every application RUNNING; print the
    applications' names as JSON."""
    progress = Progress()
    while True:
        missing, apps = cluster_missing(args)
        if not missing:
            print(json.dumps(apps))
            return 0
        if progress.elapsed > args.timeout:
            log(f"not ready after {args.timeout}s; missing: {'; '.join(missing)}")
            return 1
        progress.show("; ".join(missing))
        time.sleep(2)


def cmd_joined(args: argparse.Namespace) -> int:
    """Wait until a new node's container is healthy and its Ray node ALIVE; print the node id."""
    progress = Progress()
    while True:
        container = Container.inspect(args.container)
        if container.status in ("exited", "dead", "missing"):
            log(f"{container.name} is {container.status} (exit code {container.exit_code})")
            return 1
        nodes = alive_nodes(args.dashboard)
        node = node_of(container, nodes) if nodes is not None else None
        if container.health == "healthy" and node:
            print(node["node_id"])
            return 0
        missing = []
        if container.health != "healthy":
            missing.append(f"{container.name} healthy (it is {container.health or 'unchecked'})")
        if nodes is None:
            missing.append(f"the Ray dashboard at {args.dashboard}")
        elif not node:
            missing.append(f"its Ray node ALIVE (address {', '.join(sorted(container.ips))})")
        if progress.elapsed > args.timeout:
            log(f"{container.name} did not join in {args.timeout}s: {'; '.join(missing)}")
            if container.health_output:
                log(f"its last health check said: {container.health_output}")
            return 1
        progress.show("; ".join(missing))
        time.sleep(2)


def cmd_node_id(args: argparse.Namespace) -> int:
    """Print the ALIVE Ray node of a container."""
    container = Container.inspect(args.container)
    nodes = alive_nodes(args.dashboard)
    node = node_of(container, nodes) if nodes is not None else None
    if node is None:
        log(f"no ALIVE Ray node has an address of {container.name} ({sorted(container.ips)})")
        return 1
    print(node["node_id"])
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    """Print the RUNNING replicas per deployment as JSON: the baseline of `migrate`."""
    details = serve_details(args.dashboard)
    if details is None:
        log(f"Serve's API at {args.dashboard} did not answer")
        return 1
    print(json.dumps(running_replicas(details), sort_keys=True))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """Drain a container's Ray node (see drain())."""
    return 0 if drain(args.container, args.node_id, args.deadline) else 1


def wait_node_quiet(dashboard: str, node_id: str) -> None:
    """Give the drained node's ingress time to leave `lb`'s rotation before the stop: until the
    Ray node is gone (its raylet exits once drained and idle) or Serve's proxy there is no longer
    HEALTHY, at most QUIET_S, then LB_GRACE_S."""
    deadline = time.monotonic() + QUIET_S
    while time.monotonic() < deadline:
        nodes = alive_nodes(dashboard)
        details = serve_details(dashboard)
        if nodes is not None and details is not None:
            proxy = (details.get("proxies") or {}).get(node_id) or {}
            if node_id not in {n["node_id"] for n in nodes}:
                log("its Ray node left the cluster (drained and idle)")
                break
            if proxy.get("status") != "HEALTHY":
                log(f"Serve's ingress on it is {proxy.get('status', 'gone')}")
                break
        time.sleep(1)
    else:
        log(f"its ingress still answers after {QUIET_S}s; lb resends what it holds at the stop")
    time.sleep(LB_GRACE_S)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Wait until no Serve replica is left on the draining node and every deployment runs its
    target replicas elsewhere. At capacity, once every deployment has run at least its baseline
    (capped by its target) elsewhere for SETTLE_S, drain again with a deadline of now: Serve then
    stops what is left on the node gracefully instead of waiting for room that will not come."""
    baseline: dict[str, int] = json.loads(args.baseline)
    progress = Progress()
    floor_since: float | None = None
    redrained = False
    state = "Serve's API"
    while True:
        details = serve_details(args.dashboard)
        if details is not None:
            m = migration(details, args.node_id, baseline)
            if m.empty and not m.short:
                log("every deployment runs its target replicas off the node")
                wait_node_quiet(args.dashboard, args.node_id)
                return 0
            now = time.monotonic()
            floor_since = (floor_since or now) if not m.below else None
            if floor_since is not None and now - floor_since >= SETTLE_S:
                if m.empty:
                    log(f"at capacity: {'; '.join(m.short)} (as many as before the roll)")
                    wait_node_quiet(args.dashboard, args.node_id)
                    return 0
                if not redrained:
                    log(f"at capacity, left on the node: {'; '.join(m.left)}: every deployment "
                        "runs as many replicas elsewhere as before the roll, so Serve stops "
                        "these gracefully (drained again with a deadline of now)")  # fmt: skip
                    redrained = drain(args.container, args.node_id, 0)
            waiting = []
            if m.left:
                waiting.append(f"replicas to leave the node: {', '.join(m.left)}")
            if m.short:
                waiting.append(f"replicas elsewhere: {', '.join(m.short)}")
            state = "; ".join(waiting) + m.hint()
        if progress.elapsed > args.timeout:
            log(f"not done after {args.timeout}s; waiting for: {state}")
            return 1
        progress.show(state)
        time.sleep(2)


def cmd_image(args: argparse.Namespace) -> int:
    """Print the image of a service, reading `docker compose config` on stdin."""
    image = service_image(sys.stdin.read(), args.service)
    if not image:
        log(f"service {args.service!r} has no image in `docker compose config`")
        return 1
    print(image)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265", help="Ray dashboard URL")
    sub = parser.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help=cmd_image.__doc__)
    image.add_argument("service")
    image.set_defaults(run=cmd_image)

    ready = sub.add_parser("ready", help=cmd_ready.__doc__)
    ready.add_argument("--head", required=True, help="the ray-head container")
    ready.add_argument("--worker", action="append", default=[], help="a ray-worker container")
    ready.add_argument(
        "--apps", action="store_true", help="wait for Serve's applications, should there be none"
    )
    ready.add_argument("--api", help="the API's URL, whose /-/healthz must answer 200")
    ready.add_argument("--timeout", type=float, default=120)
    ready.set_defaults(run=cmd_ready)

    joined = sub.add_parser("joined", help=cmd_joined.__doc__)
    joined.add_argument("--container", required=True)
    joined.add_argument("--timeout", type=float, default=600)
    joined.set_defaults(run=cmd_joined)

    node_id = sub.add_parser("node-id", help=cmd_node_id.__doc__)
    node_id.add_argument("--container", required=True)
    node_id.set_defaults(run=cmd_node_id)

    replicas = sub.add_parser("replicas", help=cmd_replicas.__doc__)
    replicas.set_defaults(run=cmd_replicas)

    drain_cmd = sub.add_parser("drain", help=cmd_drain.__doc__)
    drain_cmd.add_argument("--container", required=True, help="the node's container")
    drain_cmd.add_argument("--node-id", required=True)
    drain_cmd.add_argument("--deadline", type=int, help="seconds until its stop (default: none)")
    drain_cmd.set_defaults(run=cmd_drain)

    migrate = sub.add_parser("migrate", help="wait until Serve's replicas left a draining node")
    migrate.add_argument("--container", required=True, help="the draining node's container")
    migrate.add_argument("--node-id", required=True)
    migrate.add_argument("--baseline", required=True, help="JSON of the `replicas` command")
    migrate.add_argument("--timeout", type=float, default=600)
    migrate.set_defaults(run=cmd_migrate)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
