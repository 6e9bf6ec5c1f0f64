"""The local one-node Ray cluster that b, c and the no-op deployment are served from, on Serve's
fast path (as compose ships it) or its classic one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import DASHBOARD_PORT, HERE, ROOT, wait_http

# Serve's data path, read from the environment when Ray starts (compose.yaml sets the first).
FAST_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
CLASSIC_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
# Ray's own background work, trimmed as on every compose node (`env_file`).
OVERHEAD_ENV = ROOT / "images" / "ray-overhead.env"


class RayCluster:
    """A one-node Ray cluster with all the cores; apps arrive by `serve deploy`, as in prod.
    `env` (Serve's data-path switches) reaches every Ray process started here."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        import ray

        os.environ.update(env)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")) if p
        )
        # A replaced ingress replica drains for 30 s by default; nothing is in flight here.
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
        self.work = work
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=DASHBOARD_PORT,
            logging_level="warning",
            # Production nodes stream no worker logs to a driver; here that would be a process
            # reading every replica's output while the replicas are measured.
            log_to_driver=False,
        )
        wait_http(f"http://127.0.0.1:{DASHBOARD_PORT}/api/version", 120)

    def deploy(self, name: str, config: dict[str, Any], timeout_s: float = 300) -> None:
        from ray import serve

        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(
            [
                str(Path(sys.executable).parent / "serve"),
                "deploy",
                str(path),
                "--address",
                f"http://127.0.0.1:{DASHBOARD_PORT}",
            ],
            check=True,
            capture_output=True,
        )
        expected = {app["name"] for app in config["applications"]}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            apps = serve.status().applications
            states = {n: str(apps[n].status) for n in expected if n in apps}
            if len(states) == len(expected) and all(s.endswith("RUNNING") for s in states.values()):
                return
            if any(s.endswith("DEPLOY_FAILED") for s in states.values()):
                message = "; ".join(apps[n].message for n in states)
                raise RuntimeError(f"{name}: deploy failed: {message}")
            time.sleep(1)
        raise RuntimeError(f"{name}: not RUNNING after {timeout_s}s")

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
