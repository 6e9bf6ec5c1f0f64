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


def batch_buckets(cluster: LocalCluster, model: str) -> dict[float, float]:
    return histogram_buckets(cluster.metrics_text(), BATCH_METRIC, model=model)


def eventually(cluster: LocalCluster, model: str, predicate, timeout_s: float = 90) -> dict:
    """Metrics reach the agents every few seconds: poll until `predicate(buckets)` holds."""
    deadline = time.monotonic() + timeout_s
    buckets: dict[float, float] = {}
    while time.monotonic() < deadline:
        buckets = batch_buckets(cluster, model)
        if buckets and predicate(buckets):
            return buckets
        time.sleep(2)
    raise AssertionError(f"{BATCH_METRIC}{{model={model!r}}} never satisfied the check: {buckets}")


def settled(cluster: LocalCluster, model: str, gap_s: float = 12, timeout_s: float = 120) -> dict:
    """The histogram once two reads `gap_s` apart agree: every earlier batch is exported."""
    deadline = time.monotonic() + timeout_s
    previous = batch_buckets(cluster, model)
    while time.monotonic() < deadline:
        time.sleep(gap_s)
        current = batch_buckets(cluster, model)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"{BATCH_METRIC}{{model={model!r}}} kept changing: {previous}")


def replica_actor_ids(deployment: str) -> set[str]:
    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")]
    )
    return {a.actor_id for a in actors}


def test_concurrent_burst_forms_batches(cluster: LocalCluster, api: str) -> None:
    burst(api, "embedding", 48)
    eventually(cluster, "embedding", lambda b: batches_larger_than(b, 1) > 0)


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

        seen = settled(cluster, "embedding")
        over_two_before = batches_larger_than(seen, 2)
        total_before = seen.get(float("inf"), 0.0)
        burst(api, "embedding", 32)
        # 32 requests in batches of at most 2: at least 16 more batches, none larger than 2.
        eventually(cluster, "embedding", lambda b: b[float("inf")] >= total_before + 16)
        after = settled(cluster, "embedding")
        assert batches_larger_than(after, 2) == over_two_before, (seen, after)
    finally:
        embedding["user_config"]["max_batch_size"] = 16
        cluster.deploy(config)
