"""Placement and self-healing: model replicas live on workers, and an unhealthy one is replaced."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from ray import serve
from ray.util.state import list_actors

from tests.integration.conftest import APP, LocalCluster

pytestmark = pytest.mark.integration


def alive_replicas(deployment: str) -> dict[str, str]:
    """Replica actor name -> node id, for ALIVE replicas of `deployment`."""
    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")]
    )
    return {a.name: a.node_id for a in actors}


def test_model_replicas_run_on_workers_not_head(cluster: LocalCluster) -> None:
    for deployment in ("sentiment", "summarization", "embedding"):
        placement = alive_replicas(deployment)
        assert placement, f"no replicas of {deployment}"
        assert cluster.head_node_id not in placement.values(), placement


def test_unhealthy_replica_is_replaced_while_serving(cluster: LocalCluster, api: str) -> None:
    before = alive_replicas("sentiment")
    assert len(before) == 2

    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            resp = requests.post(f"{api}/predict", json={"text": "still serving?"}, timeout=60)
            statuses.append(resp.status_code)
            time.sleep(0.05)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        handle = serve.get_deployment_handle("sentiment", app_name=APP)
        victim = handle.fail_health_checks.remote().result(timeout_s=30)
        victim_name = next(name for name in before if name.endswith(victim))

        deadline = time.monotonic() + 120
        after = before
        while time.monotonic() < deadline:
            after = alive_replicas("sentiment")
            if victim_name not in after and len(after) == 2:
                break
            time.sleep(1)
    finally:
        stop.set()
        sender.join()

    assert victim_name not in after, f"{victim_name} was not replaced: {after}"
    assert len(after) == 2, after
    assert statuses and set(statuses) == {200}, statuses
