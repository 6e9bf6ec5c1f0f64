"""A real multi-node Ray cluster on this machine (head with 0 CPUs + 2 workers, no Docker), with
the application deployed by `serve deploy` from `serve/serve_config.yaml` and test overrides."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import requests
import yaml
from ray.cluster_utils import Cluster

from serve.check_config import check_config
from tests.conftest import ROOT, SERVE_CONFIG

pytestmark = pytest.mark.integration

HTTP_PORT = 18000
DASHBOARD_PORT = 18265
METRICS_PORTS = {"head": 18080, "worker-1": 18081, "worker-2": 18082}
APP = "models"
STRICT_APP = "strict"
HASTY_APP = "hasty"
RENAMED_APP = "renamed"
# The renamed app's timeout: also how long a batch may run before its replica counts as hung.
RENAMED_TIMEOUT_S = 3.0


@dataclass
class LocalCluster:
    cluster: Cluster
    head_node_id: str
    base_config: dict[str, Any]
    config_path: Path

    url: str = f"http://127.0.0.1:{HTTP_PORT}"
    dashboard: str = f"http://127.0.0.1:{DASHBOARD_PORT}"

    def deploy(self, config: dict[str, Any]) -> None:
        """`serve deploy` through the dashboard, as an operator would, then wait for RUNNING."""
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(
            [
                str(Path(sys.executable).parent / "serve"),
                "deploy",
                str(self.config_path),
                "--address",
                self.dashboard,
            ],
            check=True,
        )
        wait_running(config)

    def metrics_text(self) -> str:
        return "".join(
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for port in METRICS_PORTS.values()
        )


def test_config(tiny_models: Path) -> dict[str, Any]:
    """The shipped config with tiny models, short health periods and copies of the API with one
    small sentiment model each, on route prefixes of their own."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"]["port"] = HTTP_PORT
    # Every node of this cluster is a process on one host: one HTTP ingress, on the head.
    config["proxy_location"] = "HeadOnly"
    apps = config["applications"]
    router = apps[0]
    router["runtime_env"]["env_vars"]["SERVE_APP_FAULT_INJECTION"] = "1"  # one dict, aliased
    for app in apps:
        app["args"]["api"]["model_dir"] = str(tiny_models)  # the Router's `api`, aliased
        for deployment in app["deployments"]:
            deployment.get("ray_actor_options", {}).pop("memory", None)
            deployment["health_check_period_s"] = 1
            deployment["health_check_timeout_s"] = 10
            if deployment["name"] == "sentiment":
                # Two replicas, so one can be replaced while the other serves.
                deployment["autoscaling_config"].update(min_replicas=2, max_replicas=2)

    # "strict" admits one request and answers 503 beyond that; "hasty" gives inference less
    # time than a round trip (504).
    sentiment = next(a for a in apps if a["name"] == "sentiment")
    config["applications"] = [
        *apps,
        *sentiment_only(router, sentiment, STRICT_APP, max_pending_requests=1),
        *sentiment_only(router, sentiment, HASTY_APP, inference_timeout_s=0.0005),
        *renamed_default(router, sentiment, tiny_models),
    ]
    check_config(config)  # what `serve deploy` gets is a config the stack would accept
    return config


def renamed_default(
    router: dict[str, Any], sentiment: dict[str, Any], tiny_models: Path
) -> list[dict[str, Any]]:
    """One sentiment model named `mood`, which is also `default_model`: no `sentiment` at all."""
    variant, model_app = sentiment_only(
        router, sentiment, RENAMED_APP, inference_timeout_s=RENAMED_TIMEOUT_S
    )
    variant["args"].update(models=["mood"], default_model="mood", classify_model="mood")
    spec = {**sentiment["args"]["spec"], "source": str(tiny_models / "sentiment")}
    model_app.update(name=f"{RENAMED_APP}-mood", route_prefix=f"/{RENAMED_APP}/models/mood")
    model_app["args"].update(model="mood", spec=spec)
    model_app["deployments"][0]["name"] = "mood"
    return [variant, model_app]


def sentiment_only(
    router: dict[str, Any],
    sentiment: dict[str, Any],
    name: str,
    inference_timeout_s: float | None = None,
    **user_config: Any,
) -> list[dict[str, Any]]:
    """A copy of the API at `/<name>`: its Router (application `name`) and one sentiment
    replica (application `<name>-sentiment` at `/<name>/models/sentiment`), batches of one.
    `inference_timeout_s` is the copy's shared `api` default, which the replica enforces (the
    shipped sentiment spec sets no timeout of its own)."""
    api = copy.deepcopy(router["args"]["api"])  # the copy's own, shared by its two applications
    if inference_timeout_s is not None:
        api["inference_timeout_s"] = inference_timeout_s
    args = {
        **copy.deepcopy(router["args"]),
        "api": api,
        "models": ["sentiment"],
        "model_app_prefix": f"{name}-",
    }
    variant = {**copy.deepcopy(router), "name": name, "route_prefix": f"/{name}", "args": args}
    model_app = copy.deepcopy(sentiment)
    model_app.update(
        name=f"{name}-sentiment",
        route_prefix=f"/{name}/models/sentiment",
        args={**copy.deepcopy(sentiment["args"]), "api": api},
    )
    deployment = model_app["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment["num_replicas"] = 1
    deployment["user_config"].update(max_batch_size=1, batch_wait_timeout_s=0.0, **user_config)
    return [variant, model_app]


def wait_running(config: dict[str, Any], timeout_s: float = 300) -> None:
    from ray import serve

    expected = {app["name"] for app in config["applications"]}
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        apps = serve.status().applications
        statuses = {name: str(apps[name].status) for name in expected if name in apps}
        if len(statuses) == len(expected) and all(s.endswith("RUNNING") for s in statuses.values()):
            return
        if any(s.endswith("DEPLOY_FAILED") for s in statuses.values()):
            raise AssertionError(f"deploy failed: {serve.status()}")
        time.sleep(1)
    raise AssertionError(f"applications not RUNNING after {timeout_s}s: {statuses}")


# Package scope: the cluster is gone before the e2e tier starts the compose stack.
@pytest.fixture(scope="package")
def cluster(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # Every Ray process inherits this, so replicas can import the `serve` package.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    head = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": DASHBOARD_PORT,
            "metrics_export_port": METRICS_PORTS["head"],
        },
    )
    for name in ("worker-1", "worker-2"):
        # The `worker` resource, as compose's workers offer it, places the Router replicas.
        head.add_node(num_cpus=4, resources={"worker": 1}, metrics_export_port=METRICS_PORTS[name])
    ray.init(address=head.address, log_to_driver=False)
    head_node_id = ray.get_runtime_context().get_node_id()
    config = test_config(tiny_models)
    local = LocalCluster(
        cluster=head,
        head_node_id=head_node_id,
        base_config=config,
        config_path=tmp_path_factory.mktemp("serve") / "serve_config.yaml",
    )
    try:
        local.deploy(config)
        yield local
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        head.shutdown()


@pytest.fixture(scope="package")
def api(cluster: LocalCluster) -> str:
    return cluster.url
