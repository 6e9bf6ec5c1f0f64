"""Dynamic batching: concurrent requests share forward passes; `user_config` changes apply live."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from ray import serve
from ray.util.state import list_actors

from serve.config import ModelSpec
from serve.deployments import ModelDeployment
from serve.models import TextModel
from tests.integration.conftest import LocalCluster
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
        filters=[
            ("class_name", "=", f"ServeReplica:{deployment}:{deployment}"),
            ("state", "=", "ALIVE"),
        ]
    )
    return {a.actor_id for a in actors}


def test_concurrent_burst_forms_batches(cluster: LocalCluster, api: str) -> None:
    burst(api, "embedding", 48)
    eventually(cluster, "embedding", lambda b: batches_larger_than(b, 1) > 0)


def test_user_config_batch_size_change_is_live(cluster: LocalCluster, api: str) -> None:
    before = replica_actor_ids("embedding")
    config = cluster.base_config
    (embedding,) = next(a for a in config["applications"] if a["name"] == "embedding")[
        "deployments"
    ]
    configured = embedding["user_config"]["max_batch_size"]
    assert configured > 2, "the change must be visible"
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
        embedding["user_config"]["max_batch_size"] = configured
        cluster.deploy(config)


class SlowForwardPass:
    """The real tiny model, with forward passes slow enough to queue behind; records batch sizes."""

    def __init__(self, model: TextModel, seconds: float) -> None:
        self.model = model
        self.seconds = seconds
        self.sizes: list[int] = []

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        self.sizes.append(len(texts))
        time.sleep(self.seconds)
        return self.model.predict(texts)

    def probe(self) -> None:
        self.model.probe()

    def set_threads(self, threads: int) -> None:
        self.model.set_threads(threads)


class SlowSentiment(ModelDeployment):
    def __init__(self, spec: ModelSpec, model_dir: str) -> None:
        super().__init__("sentiment", spec, model_dir)
        self.model = SlowForwardPass(self.model, seconds=1.0)

    def batch_sizes(self) -> list[int]:
        return self.model.sizes


def test_batch_takes_what_queued_while_the_model_ran(
    cluster: LocalCluster, tiny_models: Path
) -> None:
    """Seven requests arrive 30 ms apart while a 1 s forward pass runs. `serve.batch` would close
    a batch 10 ms after each of them (seven batches of one); the replica's dispatcher holds them
    until the model is free, and they run as one batch."""
    deployment = serve.deployment(SlowSentiment).options(
        name="slow",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=64,
        user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
    )
    spec = ModelSpec(task="sentiment", source="sentiment")
    handle = serve.run(
        deployment.bind(spec, str(tiny_models)), name="slow-batches", route_prefix=None
    )
    try:
        responses = [handle.predict.remote("the first request")]
        deadline = time.monotonic() + 30
        while not handle.batch_sizes.remote().result(timeout_s=30):  # until its batch runs
            assert time.monotonic() < deadline, "the first batch never started"
            time.sleep(0.02)
        for i in range(7):
            responses.append(handle.predict.remote(f"request {i} while the model runs"))
            time.sleep(0.03)
        assert all(r.result(timeout_s=60)["label"] for r in responses)
        sizes = handle.batch_sizes.remote().result(timeout_s=30)
    finally:
        serve.delete("slow-batches")
    assert sizes == [1, 7], sizes
