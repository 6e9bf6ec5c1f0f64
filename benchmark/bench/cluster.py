"""The local one-node Ray cluster that b, c and the no-op deployment are served from, on Serve's
fast path (as compose ships it) or its classic one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.common import DASHBOARD_PORT, HERE, METRICS_PORT, ROOT, wait_http

# Serve's data path, read from the environment when Ray starts (compose.yaml sets the first).
FAST_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
CLASSIC_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
# Ray's own background work, trimmed as on every compose node (`env_file`).
OVERHEAD_ENV = ROOT / "images" / "ray-overhead.env"
# The metrics agent has the replicas' batches this long after they ran (batch_histogram).
EXPORT_S = 12.0


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
            _metrics_export_port=METRICS_PORT,
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


def batch_histogram(model: str = "sentiment") -> dict[str, float]:
    """`ray_model_batch_size` of `model`, summed over its replicas: `count`, `sum` and the
    cumulative bucket counts by upper bound. The agent exports what replicas recorded up to about
    10 s ago, so a difference of two reads covers what ran well before each."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "ray_model_batch_size":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            key = {"_count": "count", "_sum": "sum"}.get(sample.name.removeprefix(family.name))
            key = key or f"le {sample.labels.get('le')}"
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def batch_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """How full the batches between two batch_histogram reads were."""
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    count = delta.get("count", 0.0)
    buckets = {k[3:]: round(v) for k, v in delta.items() if k.startswith("le ")}
    return {
        "batches": round(count),
        "mean_batch_size": round(delta.get("sum", 0.0) / count, 2) if count else None,
        "batches_up_to_size": buckets,
    }
