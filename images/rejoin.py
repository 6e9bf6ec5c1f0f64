"""Start a Ray worker only once the cluster has declared the node it replaces dead.

A restarted container usually comes back with the address it had (Docker keeps a container's bridge
address when it is free, and a worker on another host advertises its host's). Each node's HAProxy
reaches Serve replicas at node address:port, and Serve numbers a new node's replica ports from the
bottom of the range again. While the cluster still counts the killed node as alive, its replicas
stay in every HAProxy's list; if the new node started at once, a new replica could take a dead
one's port, and a request meant for a Router would reach a model's replica, which answers 404. So
this waits until the GCS answers and lists no live node at this address (it declares a silent node
dead within seconds), then runs the command.

    python3 rejoin.py ray start --address=ray-head:6379 ...
"""

from __future__ import annotations

import os
import socket
import sys
import time

# The GCS declares a node dead after its health checks fail for ~15 s (Ray's defaults); past this
# (checked between polls; one poll of an unreachable GCS takes up to ~40 s) the node starts
# anyway, and says so.
WAIT_S = 90.0


def option(argv: list[str], name: str) -> str | None:
    """The value of `ray start`'s option `name`, as `--name=value` or `--name value`."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def own_address(argv: list[str]) -> str:
    """The address the node will advertise: --node-ip-address, or this container's own."""
    return option(argv, "--node-ip-address") or socket.gethostbyname(socket.gethostname())


def gcs_address(argv: list[str]) -> str:
    """The GCS `ray start` joins: --address, or RAY_HEAD_ADDRESS."""
    return option(argv, "--address") or os.environ.get("RAY_HEAD_ADDRESS", "ray-head:6379")


def alive_at(gcs: str, address: str) -> list[str] | None:
    """Ids of the nodes the GCS counts as alive at `address`; None if it could not be asked (a
    head that restarts with this worker reloads the dead node from Redis as alive, so an
    unanswered question is no all-clear)."""
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    try:
        nodes = GcsClient(address=gcs).get_all_node_info(timeout=5)
    except Exception as exc:  # the GCS is not up yet, or not reachable: ask again
        print(f"[rejoin] could not list the cluster's nodes at {gcs}: {exc}", flush=True)
        return None
    return [
        node_id.hex()
        for node_id, info in nodes.items()
        if info.node_manager_address == address and info.state == GcsNodeInfo.ALIVE
    ]


def wait(gcs: str, address: str, limit_s: float = WAIT_S) -> None:
    """Until the GCS answers and lists no live node at `address`, for `limit_s` at most."""
    started = time.monotonic()
    previous = alive_at(gcs, address)
    said = False
    while previous != [] and time.monotonic() - started < limit_s:
        if previous and not said:
            print(
                f"[rejoin] the cluster still counts node {previous[0][:12]} at {address} alive: "
                "waiting until it is declared dead, so that no new replica takes its ports",
                flush=True,
            )
            said = True
        time.sleep(1)
        previous = alive_at(gcs, address)
    waited = time.monotonic() - started
    if previous != []:
        print(f"[rejoin] no all-clear after {waited:.0f} s; starting anyway", flush=True)
    elif said:
        print(f"[rejoin] declared dead after {waited:.0f} s; starting", flush=True)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: rejoin.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    wait(gcs_address(argv), own_address(argv))
    os.execvp(argv[0], argv)  # nosec B606
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
