"""Dynamic batching: concurrent requests share forward passes; `user_config` changes apply live."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from ray.util.state import list_actors

from tests.integration.conftest import APP, LocalCluster
from tests.integration.metrics import batches_larger_than, histogram_buckets

pytestmark = pytest.mark.integration

BATCH_METRIC = "ray_model_batch_size"


def burst(api: str, model: str, n: int) -> None:
    def one(i: int) -> int:
        body = {"model": model, "text": f"request number {i} in a concurrent burst"}
        return requests.post(f"{api}/predict", json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=n) as pool:
        assert set(pool.map(one, range(n))) == {200}


def wait_for_batches(cluster: LocalCluster, model: str, at_least: float) -> dict[float, float]:
    """Metrics reach the agents every few seconds; poll until `at_least` batches are counted."""
    deadline = time.monotonic() + 60
    buckets: dict[float, float] = {}
    while time.monotonic() < deadline:
        buckets = histogram_buckets(cluster.metrics_text(), BATCH_METRIC, model=model)
        if buckets and buckets[float("inf")] >= at_least:
            return buckets
        time.sleep(2)
    raise AssertionError(f"{BATCH_METRIC}{{model={model!r}}} never reached {at_least}: {buckets}")


def replica_actor_ids(deployment: str) -> set[str]:
    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")]
    )
    return {a.actor_id for a in actors}


def test_concurrent_burst_forms_batches(cluster: LocalCluster, api: str) -> None:
    burst(api, "embedding", 48)
    buckets = wait_for_batches(cluster, "embedding", at_least=1)
    assert batches_larger_than(buckets, 1) > 0, buckets


def test_user_config_batch_size_change_is_live(cluster: LocalCluster, api: str) -> None:
    before = replica_actor_ids("embedding")
    config = cluster.base_config
    embedding = next(
        d for d in config["applications"][0]["deployments"] if d["name"] == "embedding"
    )
    embedding["user_config"]["max_batch_size"] = 2
    try:
        cluster.deploy(config)
        deadline = time.monotonic() + 60
        batching: dict = {}
        while time.monotonic() < deadline:
            models = requests.get(f"{api}/models", timeout=30).json()["models"]
            batching = next(m for m in models if m["name"] == "embedding")["batching"]
            if batching.get("max_batch_size") == 2:
                break
            time.sleep(1)
        assert batching.get("max_batch_size") == 2, batching
        assert replica_actor_ids("embedding") == before, "reconfigure must not restart replicas"

        seen = histogram_buckets(cluster.metrics_text(), BATCH_METRIC, model="embedding")
        over_two_before = batches_larger_than(seen, 2)
        total_before = seen[float("inf")]
        burst(api, "embedding", 32)
        after = wait_for_batches(cluster, "embedding", at_least=total_before + 16)
        assert batches_larger_than(after, 2) == over_two_before, (seen, after)
    finally:
        embedding["user_config"]["max_batch_size"] = 16
        cluster.deploy(config)
