"""The model deployment: one class for every task (the task is config), and the HTTP ingress of
its model's own application, so `POST /models/<name>/predict` reaches it without the Router.

Replicas, autoscaling, resources and health-check periods are set in `serve_config.yaml`; batching
travels in `user_config`, so `serve deploy` of a changed batch size reconfigures live replicas.
"""

# No `from __future__ import annotations`: FastAPI reads the real types off the methods that
# `serve.ingress` rebinds.
import asyncio
import logging
import os
import time
from typing import Any

import ray
import torch
from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve

from serve.config import ModelAppArgs, ModelSpec, ModelUserConfig, resolve_source
from serve.cores import CoreTokens
from serve.dispatcher import Dispatcher
from serve.errors import (
    ERROR_RESPONSES,
    ApiError,
    ModelTimeout,
    Overloaded,
    check_text,
    json_api,
)
from serve.metrics import MODEL_ROUTE, ApiResponses, ModelMetrics
from serve.models import load_model
from serve.schemas import (
    EmbeddingResult,
    ModelPredictRequest,
    SentimentResult,
    SummaryResult,
    answer,
)
from serve.slo_policy import ReplicaReport
from serve.watchdog import BatchWatch

logger = logging.getLogger("ray.serve")

FAULT_INJECTION_ENV = "SERVE_APP_FAULT_INJECTION"
WARM_UP_TEXT = "A short text that runs through the model once before the first request."
WARM_UP_BATCH = 4


def require_fault_injection() -> None:
    if os.environ.get(FAULT_INJECTION_ENV) != "1":
        raise PermissionError(f"fault injection is disabled (set {FAULT_INJECTION_ENV}=1)")


def policy_of(autoscaling: Any) -> dict[str, Any]:
    """The deployment's autoscaling policy as its config names it (Ray's default or ours)."""
    policy = getattr(autoscaling, "policy", None)
    return {
        "function": str(getattr(policy, "policy_function", "default")),
        "kwargs": dict(getattr(policy, "policy_kwargs", None) or {}),
    }


def node_cpus() -> int:
    """Cores this process may run on (the container's cpuset, not the host's count)."""
    return len(os.sched_getaffinity(0))


class ModelDeployment:
    """Shared body of the model deployments: load once, batch requests, report health."""

    def __init__(self, name: str, spec: ModelSpec, model_dir: str | None = None) -> None:
        # Intra-op threads for a batch = reserved CPUs, so co-located replicas under load don't
        # oversubscribe the node; a lone request may use the node's idle cores (reconfigure()).
        # What Ray reserved for this replica (`ray_actor_options`: num_cpus, memory).
        self.reserved = dict(ray.get_runtime_context().get_assigned_resources())
        self.batch_threads = max(1, int(self.reserved.get("CPU", 1.0)))
        self.lone_threads = ModelUserConfig().lone_request_threads or node_cpus()
        torch.set_num_threads(self.batch_threads)
        self.name = name
        self.spec = spec
        self.version = spec.effective_version
        self.settings = ModelUserConfig()
        self.metrics = ModelMetrics(name, self.version)
        self.consecutive_failures = 0
        self.pending = 0  # requests inside predict(): running or waiting for the model
        self.injected_fault: str | None = None
        self.injected_batch_failures = 0
        self.injected_hang_s: float | None = None
        # The running batch, and how long it should take (check_health's verdict).
        self.watch = BatchWatch(spec.max_input_tokens)
        self.cores = CoreTokens(node_cpus())
        self.report = ReplicaReport(since=time.perf_counter())  # for the SLO policy
        self.dispatcher: Dispatcher[str, dict[str, Any]] = Dispatcher(
            self.run_batch, self.settings.max_batch_size, self.settings.batch_wait_timeout_s
        )
        started = time.perf_counter()
        self.source = resolve_source(name, spec, model_dir)
        self.model = load_model(spec, self.source)
        loaded = time.perf_counter()
        # One short input through the model before the first request: its first call's setup
        # is paid here, and the watchdog has a cost per unit to start from (a lone short input
        # costs more per unit than a batch does, so it errs towards patience).
        self.watch.start([WARM_UP_TEXT], loaded)
        self._forward([WARM_UP_TEXT], self.batch_threads)
        warm_s = self.watch.finish(time.perf_counter(), self.spec.timeout_s or 0.0)
        # Two more, of two sizes, give the dispatcher's batch-time fit a start, so the SLO
        # policy can predict from this replica's first report (real batches soon replace them).
        for texts in ([WARM_UP_TEXT], [WARM_UP_TEXT] * WARM_UP_BATCH):
            started = time.perf_counter()
            self._forward(texts, self.batch_threads)
            self.dispatcher.batch_time.observe(len(texts), time.perf_counter() - started)
        logger.info(
            "Loaded model %r (%s) from %s in %.1fs with %d torch threads; first input %.2fs",
            name,
            spec.task.value,
            self.source,
            loaded - started,
            torch.get_num_threads(),
            warm_s,
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply `user_config` without restarting the replica (Serve calls this on every change)."""
        self.settings = ModelUserConfig.model_validate(user_config or {})
        self.dispatcher.configure(self.settings.max_batch_size, self.settings.batch_wait_timeout_s)
        self.lone_threads = self.settings.lone_request_threads or node_cpus()

    async def predict(self, text: str) -> dict[str, Any]:
        """One input in, one result out (with the `version` that answered); concurrent calls
        are grouped into batches (serve/dispatcher.py: a batch takes everything that queued while
        the model ran). ModelTimeout past the model's `timeout_s`.
        """
        self.report.arrive()  # demand, answered or not
        if self.pending >= self.settings.max_pending_requests:
            raise Overloaded(
                f"Model {self.name!r} holds {self.pending} requests on this replica "
                f"(max_pending_requests {self.settings.max_pending_requests})"
            )
        self.pending += 1
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.dispatcher.submit(text), self.spec.timeout_s)
        except TimeoutError:
            raise ModelTimeout(
                f"Model {self.name!r} did not answer within {self.spec.timeout_s}s"
            ) from None
        finally:
            self.pending -= 1
        self.report.answered(time.perf_counter() - started)
        return {**result, "version": self.version}

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """What the SLO policy (serve/slo_policy.py) decides on; Serve calls it every few
        seconds whichever policy the deployment runs."""
        return self.report.report(
            time.perf_counter(),
            len(self.dispatcher.queue),
            self.dispatcher.batch_time,
            self.settings.max_batch_size,
            self.reserved,
        )

    async def run_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        """One forward pass over a batch the dispatcher formed; the watchdog and metrics see it."""
        started = time.perf_counter()
        self.watch.start(texts, started)
        learn = False
        try:
            if self.injected_batch_failures:
                self.injected_batch_failures -= 1
                raise RuntimeError("injected batch failure (fail_next_batches)")
            if self.injected_hang_s is not None:
                hang_s, self.injected_hang_s = self.injected_hang_s, None
                await asyncio.to_thread(time.sleep, hang_s)  # a forward pass that never returns
            # A lone request spreads over the node's cores that no other forward pass holds
            # (serve/cores.py); a batch runs on the replica's own. A worker thread keeps the
            # replica's event loop free for queuing and health checks.
            lone = len(texts) == 1
            with self.cores.take(self.lone_threads if lone else self.batch_threads) as taken:
                threads = max(1, taken) if lone else self.batch_threads
                results = await asyncio.to_thread(self._forward, texts, threads)
            learn = True
        except Exception as exc:
            self.consecutive_failures += 1
            self.metrics.record_error(exc)
            raise
        finally:
            self.watch.finish(time.perf_counter(), self.spec.timeout_s or 0.0, learn=learn)
        self.consecutive_failures = 0
        self.metrics.record_batch(texts, (time.perf_counter() - started) * 1000)
        return results

    def _forward(self, texts: list[str], threads: int) -> list[dict[str, Any]]:
        self.model.set_threads(threads)
        return self.model.predict(texts)

    def check_health(self) -> None:
        """Cheap by design, no forward pass: a loaded model, no batch running far past what its
        size and inputs predict and past the model's timeout (by then every caller has had its
        504, and the requests queued behind it would get theirs too: the model is hung;
        serve/watchdog.py), and a bounded run of failed batches."""
        self.model.probe()
        if self.injected_fault:
            raise RuntimeError(self.injected_fault)
        hung = self.watch.hung(time.perf_counter(), self.spec.timeout_s or 0.0)
        if hung:
            raise RuntimeError(hung)
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
            "version": self.version,
            "batching": {
                "max_batch_size": self.settings.max_batch_size,
                "batch_wait_timeout_s": self.settings.batch_wait_timeout_s,
            },
            "autoscaling": None
            if autoscaling is None
            else {
                **{
                    key: getattr(autoscaling, key)
                    for key in (
                        "min_replicas",
                        "max_replicas",
                        "target_ongoing_requests",
                        "upscale_delay_s",
                        "downscale_delay_s",
                    )
                },
                "policy": policy_of(autoscaling),
            },
            "max_ongoing_requests": getattr(config, "max_ongoing_requests", None),
            "num_cpus": float(self.reserved.get("CPU", 1.0)),
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


model_api = json_api(
    "Ray Serve model API", "One model's own route, served by its replicas without the Router hop."
)


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress(model_api)
class ModelServer(ModelDeployment):
    """A model's replicas: `predict` by handle for the Router, and `POST /predict` under the
    model application's route prefix (`/models/<name>`), with the Router's validation, errors
    and metrics."""

    def __init__(self, name: str, spec: ModelSpec, args: ModelAppArgs) -> None:
        super().__init__(name, spec, args.api.model_dir)
        self.args = args
        model_api.state.max_body_bytes = args.api.max_body_bytes
        model_api.state.responses = ApiResponses(
            {MODEL_ROUTE: [name]}, {"/predict": MODEL_ROUTE}, model=name, version=self.version
        )

    @model_api.post(
        "/predict",
        response_model=SentimentResult | SummaryResult | EmbeddingResult,
        responses=ERROR_RESPONSES,
    )
    async def serve_predict(self, request: ModelPredictRequest, http: Request) -> JSONResponse:
        http.state.model = self.name
        http.state.version = self.version
        check_text(request.text, self.args.api.max_text_chars)
        retry = {"Retry-After": str(self.args.api.retry_after_s)}
        try:
            result = await self.predict(request.text)
        except ModelTimeout as exc:
            raise ApiError(504, "timeout", str(exc)) from None
        except Overloaded as exc:
            raise ApiError(503, "overloaded", str(exc), retry) from None
        except Exception as exc:
            # The cause stays in the logs: its text may carry the model's internals.
            logger.warning("Model %r failed: %r", self.name, exc)
            raise ApiError(
                500, "inference_failed", f"Model {self.name!r} failed; its replica's log says why"
            ) from None
        result.pop("version")
        return answer({"model": self.name, **result})
