"""Keep Prometheus's file of Ray nodes on other hosts current (file_sd_configs in
prometheus/prometheus.yml).

Nodes on this host are found through Docker's DNS; a worker that joined from another machine
(compose.worker.yaml) is not in it. It carries the node label `location=remote`, so this asks the
Ray dashboard for the live nodes with that label every few seconds and writes their metrics
addresses (the address each node advertises, and the pinned metrics port) in Prometheus's
file_sd format. While the head is down the last file stays, so scraping goes on. The file is
rewritten at every answer, so its age tells the service's health (`--healthy`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import requests

LABEL = ("location", "remote")  # compose.worker.yaml starts remote workers with this label
METRICS_PORT = 8080  # every node's --metrics-export-port (the port table)


def remote_nodes(dashboard: str, token: str) -> list[str]:
    """Addresses of the live nodes labelled as remote, sorted."""
    resp = requests.get(
        f"{dashboard}/api/v0/nodes",
        params={"limit": 10000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    resp.raise_for_status()
    nodes = resp.json()["data"]["result"]["result"]
    return sorted(
        node["node_ip"]
        for node in nodes
        if node["state"] == "ALIVE" and (node.get("labels") or {}).get(LABEL[0]) == LABEL[1]
    )


def write_targets(path: Path, addresses: list[str], port: int) -> None:
    """Replace `path` atomically: Prometheus may read it at any moment."""
    groups = [{"targets": [f"{address}:{port}" for address in addresses], "labels": {}}]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups if addresses else [], indent=2) + "\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", default="http://ray-head:8265")
    parser.add_argument("--token-file", default=os.environ.get("RAY_AUTH_TOKEN_PATH", ""))
    parser.add_argument("--out", type=Path, default=Path("/ray-targets/remote_nodes.json"))
    parser.add_argument("--port", type=int, default=METRICS_PORT, help="the nodes' metrics port")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between updates")
    parser.add_argument(
        "--healthy",
        type=float,
        metavar="SECONDS",
        help="exit 0 if the Ray dashboard answered within SECONDS (the file's age), else 1",
    )
    args = parser.parse_args()
    if args.healthy is not None:
        try:
            age = time.time() - args.out.stat().st_mtime
        except FileNotFoundError:
            return 1
        return 0 if age <= args.healthy else 1

    # PID 1 of its container: without a handler, `docker compose stop` would wait and then kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    token = Path(args.token_file).read_text().strip() if args.token_file else ""
    # Quiet while the head starts (minutes on a first start), and one line per outage after.
    print(f"ray-targets: waiting for the Ray dashboard at {args.dashboard}", flush=True)
    last: list[str] | None = None
    failing = False
    while True:
        try:
            addresses = remote_nodes(args.dashboard, token)
        except (requests.RequestException, KeyError, ValueError) as exc:
            if last is not None and not failing:
                print(f"ray-targets: cannot list Ray's nodes ({exc}); keeping the last targets")
            failing = True
        else:
            write_targets(args.out, addresses, args.port)
            if addresses != last or failing:
                print(f"ray-targets: remote nodes {addresses or 'none'}")
                last = addresses
            failing = False
        sys.stdout.flush()
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
