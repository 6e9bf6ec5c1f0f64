"""Placement and self-healing: model replicas live on workers, and an unhealthy one is replaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import ray
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


@contextmanager
def traffic(api: str, clients: int, pause_s: float = 0.0) -> Iterator[list[int]]:
    """`clients` threads posting to /predict until the block ends; yields their status codes."""
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            resp = requests.post(f"{api}/predict", json={"text": "still serving?"}, timeout=60)
            statuses.append(resp.status_code)
            time.sleep(pause_s)

    senders = [threading.Thread(target=send) for _ in range(clients)]
    for sender in senders:
        sender.start()
    try:
        yield statuses
    finally:
        stop.set()
        for sender in senders:
            sender.join()


def test_model_replicas_run_on_workers_not_head(cluster: LocalCluster) -> None:
    for deployment in ("sentiment", "summarization", "embedding"):
        placement = alive_replicas(deployment)
        assert placement, f"no replicas of {deployment}"
        assert cluster.head_node_id not in placement.values(), placement


def test_unhealthy_replica_is_replaced_while_serving(cluster: LocalCluster, api: str) -> None:
    before = alive_replicas("sentiment")
    assert len(before) == 2

    with traffic(api, clients=1, pause_s=0.05) as statuses:
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

    assert victim_name not in after, f"{victim_name} was not replaced: {after}"
    assert len(after) == 2, after
    assert statuses and set(statuses) == {200}, statuses


def test_killed_replica_loses_no_request(cluster: LocalCluster, api: str) -> None:
    """A replica dying mid-request: the Router sends its requests to the other replica."""
    before = alive_replicas("sentiment")
    assert len(before) == 2
    retries_before = router_retries(cluster)
    with traffic(api, clients=8) as statuses:
        time.sleep(2)  # requests in flight on both replicas
        victim = next(iter(before))
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        time.sleep(3)

    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # Serve's own handle routing re-sends what the dead replica had not accepted; the Router
    # retries what it had (the figure can be 0 when the kill caught nothing in flight).
    time.sleep(15)  # metrics reach the agent within seconds
    print(
        f"\nrequests: {len(statuses)}, failed: 0, "
        f"retried by the Router: {router_retries(cluster) - retries_before:.0f}"
    )
    deadline = time.monotonic() + 120
    while len(alive_replicas("sentiment")) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert len(alive_replicas("sentiment")) == 2, "the killed replica was not replaced"


def router_retries(cluster: LocalCluster) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in cluster.metrics_text().splitlines()
        if line.startswith("ray_router_retries_total{")
    )
