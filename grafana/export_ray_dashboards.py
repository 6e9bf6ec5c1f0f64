"""Export Ray's own Grafana dashboards from the running head into grafana/dashboards/ray/.

Ray writes dashboard JSON for its exact version into the head's session directory; this copies the
default, Serve and Serve-deployment dashboards out of the `ray-head` container, points every panel
at the provisioned datasource (uid `prometheus`) instead of a `${datasource}` variable, and drops
the queries about hardware and features this stack does not have (GPU, TPU, gRPC, model
multiplexing), and panels left without a query. Rerun after a Ray upgrade:

    scripts/up.sh && python3 grafana/export_ray_dashboards.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DASHBOARDS = ("default", "serve", "serve_deployment")
# Where Ray writes its dashboards, inside the head container (not a temp file of ours).
SOURCE_DIR = "/tmp/ray/session_latest/metrics/grafana/dashboards"  # nosec B108
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
NOT_APPLICABLE = re.compile(r"gpu|_gram_|tpu|grpc|multiplex", re.IGNORECASE)


def compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    sys.exit("neither 'docker compose' nor 'docker-compose' is installed")


def rewire(node: Any) -> Any:
    """Replace every datasource reference with the pinned one, recursively."""
    if isinstance(node, dict):
        return {
            k: DATASOURCE if k == "datasource" and not isinstance(v, list) else rewire(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rewire(v) for v in node]
    return node


def prune(panels: list[dict]) -> tuple[list[dict], int]:
    kept, dropped = [], 0
    for panel in panels:
        if panel.get("type") == "row":
            inner, n = prune(panel.get("panels", []))
            dropped += n
            kept.append({**panel, "panels": inner})
            continue
        targets = [
            t for t in panel.get("targets", []) if not NOT_APPLICABLE.search(t.get("expr", ""))
        ]
        if panel.get("targets") and not targets:
            dropped += 1
            continue
        kept.append({**panel, "targets": targets} if "targets" in panel else panel)
    return kept, dropped


def convert(dashboard: dict) -> tuple[dict, int]:
    dashboard = rewire(dashboard)
    dashboard["panels"], dropped = prune(dashboard.get("panels", []))
    templating = dashboard.get("templating", {})
    templating["list"] = [v for v in templating.get("list", []) if v.get("type") != "datasource"]
    dashboard["id"] = None
    return dashboard, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("grafana/dashboards/ray"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        path = f"{SOURCE_DIR}/{name}_grafana_dashboard.json"
        raw = subprocess.run(
            [*compose(), "exec", "-T", "ray-head", "cat", path],
            capture_output=True,
            text=True,
        )
        if raw.returncode != 0:
            print(f"could not read {path} from ray-head: {raw.stderr.strip()}", file=sys.stderr)
            return 1
        dashboard, dropped = convert(json.loads(raw.stdout))
        target = args.out / f"{name}_grafana_dashboard.json"
        target.write_text(json.dumps(dashboard, indent=2) + "\n")
        print(
            f"{target}: {dashboard.get('title')} (uid {dashboard.get('uid')}), "
            f"{dropped} not-applicable panels dropped"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
