"""One Serve deployment class per task; a second model of an existing task is config only.

Replicas, autoscaling, resources and health-check periods are set in `serve_config.yaml`; batching
travels in `user_config`, so `serve deploy` of a changed batch size reconfigures live replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray
import torch
from ray import serve

from serve.config import ModelSpec, ModelUserConfig, Task, resolve_source
from serve.metrics import ModelMetrics
from serve.models import load_model

logger = logging.getLogger("ray.serve")

FAULT_INJECTION_ENV = "SERVE_APP_FAULT_INJECTION"
# A batch running longer than the model's timeout (no caller waits for it any more) marks the
# replica hung; this floor keeps a test's sub-second timeout from condemning ordinary batches.
MIN_HUNG_BATCH_S = 1.0


def require_fault_injection() -> None:
    if os.environ.get(FAULT_INJECTION_ENV) != "1":
        raise PermissionError(f"fault injection is disabled (set {FAULT_INJECTION_ENV}=1)")


def assigned_cpus() -> float:
    """CPUs Ray reserved for this replica (`ray_actor_options.num_cpus`)."""
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))


class ModelDeployment:
    """Shared body of the model deployments: load once, batch requests, report health."""

    def __init__(self, name: str, spec: ModelSpec, model_dir: str | None = None) -> None:
        # Intra-op threads = reserved CPUs, so co-located replicas don't oversubscribe the node.
        torch.set_num_threads(max(1, int(assigned_cpus())))
        self.name = name
        self.spec = spec
        self.settings = ModelUserConfig()
        self.metrics = ModelMetrics(name)
        self.consecutive_failures = 0
        self.injected_fault: str | None = None
        self.injected_batch_failures = 0
        self.injected_hang_s: float | None = None
        # perf_counter() when the running batch started; None while the model is idle.
        self.batch_started: float | None = None
        self.model_free = asyncio.Event()  # set while no batch is running; see predict()
        self.model_free.set()
        started = time.perf_counter()
        self.source = resolve_source(name, spec, model_dir)
        self.model = load_model(spec, self.source)
        logger.info(
            "Loaded model %r (%s) from %s in %.1fs with %d torch threads",
            name,
            spec.task.value,
            self.source,
            time.perf_counter() - started,
            torch.get_num_threads(),
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply `user_config` without restarting the replica (Serve calls this on every change)."""
        self.settings = ModelUserConfig.model_validate(user_config or {})
        self.infer_batch.set_max_batch_size(self.settings.max_batch_size)
        self.infer_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    async def predict(self, text: str) -> dict[str, Any]:
        """One input in, one result out; concurrent calls are grouped into batches.

        Requests wait here while a batch runs and enter the batcher together once the model is
        free. `serve.batch` closes its next batch `batch_wait_timeout_s` after that batch's first
        request, even while the model is still busy, so without this gate a saturated replica
        runs batches of whatever arrived in one short window (mostly 1-2 requests) instead of
        everything that queued during the last forward pass (docs/benchmark.md).
        """
        await self.model_free.wait()
        return await self.infer_batch(text)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def infer_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        started = self.batch_started = time.perf_counter()
        self.model_free.clear()
        try:
            if self.injected_batch_failures:
                self.injected_batch_failures -= 1
                raise RuntimeError("injected batch failure (fail_next_batches)")
            if self.injected_hang_s is not None:
                hang_s, self.injected_hang_s = self.injected_hang_s, None
                await asyncio.to_thread(time.sleep, hang_s)  # a forward pass that never returns
            # A worker thread keeps the replica's event loop free for queuing and health checks.
            results = await asyncio.to_thread(self.model.predict, texts)
        except Exception as exc:
            self.consecutive_failures += 1
            self.metrics.record_error(exc)
            raise
        finally:
            self.batch_started = None
            self.model_free.set()
        self.consecutive_failures = 0
        self.metrics.record_batch(texts, (time.perf_counter() - started) * 1000)
        return results

    def check_health(self) -> None:
        """Cheap by design, no forward pass: a loaded model, no batch running past the model's
        timeout (by then every caller has had its 504, and the requests queued behind it would
        get theirs too: the model is hung), and a bounded run of failed batches."""
        self.model.probe()
        if self.injected_fault:
            raise RuntimeError(self.injected_fault)
        limit_s = max(self.spec.timeout_s or 0.0, MIN_HUNG_BATCH_S)
        running_s = 0.0 if self.batch_started is None else time.perf_counter() - self.batch_started
        if running_s > limit_s:
            raise RuntimeError(
                f"a batch has run for {running_s:.0f}s, past the model's timeout ({limit_s}s): "
                "the model is hung"
            )
        if self.consecutive_failures >= self.settings.max_consecutive_failures:
            raise RuntimeError(
                f"{self.consecutive_failures} consecutive failed batches "
                f"(limit {self.settings.max_consecutive_failures})"
            )

    def describe(self) -> dict[str, Any]:
        """The live settings of this replica, for `GET /models`."""
        config = getattr(serve.get_replica_context(), "_deployment_config", None)
        autoscaling = getattr(config, "autoscaling_config", None)
        return {
            "name": self.name,
            "task": self.spec.task.value,
            "source": self.source,
            "batching": {
                "max_batch_size": self.settings.max_batch_size,
                "batch_wait_timeout_s": self.settings.batch_wait_timeout_s,
            },
            "autoscaling": None
            if autoscaling is None
            else {
                key: getattr(autoscaling, key)
                for key in (
                    "min_replicas",
                    "max_replicas",
                    "target_ongoing_requests",
                    "upscale_delay_s",
                    "downscale_delay_s",
                )
            },
            "max_ongoing_requests": getattr(config, "max_ongoing_requests", None),
            "num_cpus": assigned_cpus(),
        }

    def fail_health_checks(self) -> str:
        """Fault injection for tests: this replica fails its health checks until Serve replaces it.

        Only enabled when the deployment's runtime_env sets SERVE_APP_FAULT_INJECTION=1.
        """
        require_fault_injection()
        replica = serve.get_replica_context().replica_tag
        self.injected_fault = f"fault injected into replica {replica}"
        logger.warning("Replica %s will fail its health checks from now on", replica)
        return replica

    def hang_next_batch(self, seconds: float = 3600.0) -> str:
        """Fault injection for tests: this replica's next forward pass blocks for `seconds`, as a
        wedged model would. Enabled like `fail_health_checks`."""
        require_fault_injection()
        self.injected_hang_s = seconds
        replica = serve.get_replica_context().replica_tag
        logger.warning("Replica %s will hang in its next batch for %.0fs", replica, seconds)
        return replica

    def fail_next_batches(self, count: int = 1) -> str:
        """Fault injection for tests: this replica's next `count` batches raise, as a broken
        model would. Enabled like `fail_health_checks`."""
        require_fault_injection()
        self.injected_batch_failures = count
        replica = serve.get_replica_context().replica_tag
        logger.warning("Replica %s will fail its next %d batches", replica, count)
        return replica


@serve.deployment(ray_actor_options={"num_cpus": 1})
class SentimentClassifier(ModelDeployment):
    """Text classification, e.g. DistilBERT fine-tuned on SST-2."""


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Summarizer(ModelDeployment):
    """Abstractive summarization, e.g. distilbart-cnn-12-6."""


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Embedder(ModelDeployment):
    """Sentence embeddings, e.g. all-MiniLM-L6-v2."""


DEPLOYMENTS = {
    Task.SENTIMENT: SentimentClassifier,
    Task.SUMMARIZATION: Summarizer,
    Task.EMBEDDING: Embedder,
}
