"""Application arguments: the `args` block of the Serve config, validated with pydantic.

Ray hands the builder a plain dict; validating it here turns a typo in the config into a start-up
error that names the offending field instead of a failure on the first request.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class Task(StrEnum):
    """What a model does; each task has its own deployment class and response schema."""

    SENTIMENT = "sentiment"
    SUMMARIZATION = "summarization"
    EMBEDDING = "embedding"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelUserConfig(Strict):
    """A model deployment's `user_config`, applied in `reconfigure()`: changes need no restart."""

    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, le=5.0)
    max_consecutive_failures: int = Field(default=5, ge=1)
    # Requests a replica holds at once (running or waiting for the model), from the Router and
    # from the model's own route alike; the next one is answered 503 with Retry-After. Below the
    # deployment's max_ongoing_requests, so Serve never queues (or rejects) a request itself.
    max_pending_requests: int = Field(default=64, ge=1)
    # Intra-op threads for a batch of one request: a lone request may use the node's idle cores
    # (0: the node's CPU count), those no other forward pass holds (serve/cores.py); a larger
    # batch runs on the replica's num_cpus threads.
    lone_request_threads: int = Field(default=0, ge=0, le=64)


class GenerationOptions(Strict):
    """Summarization length bounds, in tokens (the seed's 80/20 by default)."""

    max_length: int = Field(default=80, ge=1, le=1024)
    min_length: int = Field(default=20, ge=0)
    num_beams: int | None = Field(default=None, ge=1, le=16)  # None: the model's own default

    @model_validator(mode="after")
    def _min_below_max(self) -> GenerationOptions:
        if self.min_length > self.max_length:
            raise ValueError(
                f"min_length ({self.min_length}) exceeds max_length ({self.max_length})"
            )
        return self


VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"


class CanarySpec(Strict):
    """A new version of a model, tried on a share of its traffic beside the stable one and
    promoted or rolled back by the deployer (scripts/deploy.py) on Prometheus's figures."""

    version: str = Field(pattern=VERSION)
    # Where the new version's weights come from; unset fields keep the stable version's.
    source: str | None = Field(default=None, min_length=1)
    revision: str | None = Field(default=None, min_length=1)
    # Traffic shares in percent, one per interval while the canary holds; the last is 100.
    steps: list[int] = Field(default=[10, 25, 50, 100], min_length=1)
    interval_s: float = Field(default=60.0, ge=5.0)
    # A step is judged only on at least this many canary answers in its interval; fewer holds.
    min_requests: int = Field(default=20, ge=1)
    # Rolled back when its 5xx ratio exceeds stable's by more than this ...
    max_error_ratio_increase: float = Field(default=0.01, ge=0.0, le=1.0)
    # ... or its p95 latency exceeds stable's by more than this factor.
    max_p95_ratio: float = Field(default=1.5, ge=1.0)
    # Rolled back when its application is not RUNNING within this (broken weights, no room).
    ready_timeout_s: float = Field(default=600.0, gt=0)

    @field_validator("steps")
    @classmethod
    def _steps_rise_to_100(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps {steps} must rise strictly, each in 1..100")
        if steps[-1] != 100:
            raise ValueError(f"steps {steps} must end at 100 (promotion)")
        return steps


class ModelSpec(Strict):
    """One served model: its task and where its weights come from (hub id or local directory)."""

    task: Task
    source: str = Field(min_length=1)
    # Hub commit (or tag) to fetch when `source` is a hub id, so a rebuild gets the same weights;
    # None takes the hub's default branch.
    revision: str | None = Field(default=None, min_length=1)
    # The `version` label of the model's metrics and answers (None: the revision, else "1").
    version: str | None = Field(default=None, pattern=VERSION)
    max_input_tokens: int = Field(default=512, ge=8, le=4096)
    timeout_s: float | None = Field(default=None, gt=0)  # None: the app's inference_timeout_s
    generation: GenerationOptions | None = None
    # Opt-in int8 dynamic quantization of the Linear layers; the replica refuses to start when the
    # quantized model disagrees with fp32 on a fixed text set (serve/quantization.py).
    quantize: Literal["int8"] | None = None
    # Opt-in ONNX Runtime instead of torch for encoder models: the graph is exported when models
    # are prepared (scripts/fetch_models.py, scripts/make_test_models.py), never at request time,
    # and a replica refuses to start when it disagrees with torch fp32 (serve/quantization.py).
    runtime: Literal["torch", "onnxruntime"] = "torch"
    # Sort each batch by token length and run similar lengths together, so short inputs are not
    # padded to the longest one (encoder models). Opt-in: it wins on mixed lengths (2.4x in
    # docs/benchmark.md) and costs an extra tokenizer pass on uniform ones.
    bucket_by_length: bool = False
    # A new version on a share of the traffic (CanarySpec); the deployer strips it from the
    # stable application, so declaring one restarts nothing.
    canary: CanarySpec | None = None

    @model_validator(mode="after")
    def _generation_only_for_summarization(self) -> ModelSpec:
        if self.generation is not None and self.task is not Task.SUMMARIZATION:
            raise ValueError("generation options apply only to task 'summarization'")
        return self

    @model_validator(mode="after")
    def _quantize_only_where_checked(self) -> ModelSpec:
        if self.quantize is not None and self.task is Task.SUMMARIZATION:
            raise ValueError(
                "quantize applies to 'sentiment' and 'embedding' (their agreement with fp32 is "
                "checked at start); not to 'summarization'"
            )
        return self

    @model_validator(mode="after")
    def _onnxruntime_only_for_encoders(self) -> ModelSpec:
        if self.runtime == "onnxruntime" and self.task is Task.SUMMARIZATION:
            raise ValueError(
                "runtime 'onnxruntime' applies to 'sentiment' and 'embedding' (encoder models "
                "exported when prepared); 'summarization' runs on torch"
            )
        return self

    @model_validator(mode="after")
    def _canary_is_new(self) -> ModelSpec:
        if self.canary is not None and self.canary.version == self.effective_version:
            raise ValueError(f"canary.version {self.canary.version!r} is the stable version")
        return self

    @property
    def generation_options(self) -> GenerationOptions:
        return self.generation or GenerationOptions()

    @property
    def effective_version(self) -> str:
        return self.version or (self.revision or "1")[:40]

    def as_canary(self) -> ModelSpec:
        """The spec the canary's application serves: this one with the canary's version and
        weights, and no canary of its own."""
        if self.canary is None:
            raise ValueError("the spec declares no canary")
        update: dict[str, Any] = {"version": self.canary.version, "canary": None}
        if self.canary.source is not None:  # new weights: the stable revision is not theirs
            update["source"], update["revision"] = self.canary.source, None
        if self.canary.revision is not None:
            update["revision"] = self.canary.revision
        return self.model_copy(update=update)


class ApiLimits(Strict):
    """What every application of the API shares: request limits, default timeout, the prepared
    model directory. The Router's `args.api`, aliased (YAML `*api`) into each model's args."""

    model_dir: str | None = None  # a prepared `<model_dir>/<name>/` wins over `source`
    max_text_chars: int = Field(default=10_000, ge=1)
    # At most what the load balancers keep for replaying a request on another node (tune.bufsize
    # 80 KiB in lb/haproxy.cfg and RAY_SERVE_HAPROXY_TUNE_BUFSIZE in compose.yaml, headers
    # included): a larger body could not be resent when a node dies. Raise all three together.
    max_body_bytes: int = Field(default=65_536, ge=1024, le=73_728)
    inference_timeout_s: float = Field(default=30.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)


class AppArgs(Strict):
    """The Router's `args`: the API's shared limits and the models it routes to, by name only.
    Each model's spec lives in its own application's args, so a change to one model restarts
    that model's replicas alone (Ray hashes an application's args into its code version)."""

    api: ApiLimits = ApiLimits()
    models: list[str] = Field(min_length=1)
    default_model: str = "sentiment"
    classify_model: str = "sentiment"
    # Inference is idempotent: a request whose replica (or its node) died is sent again, to another
    # replica, up to this many times within request_timeout_s.
    max_retries: int = Field(default=2, ge=0, le=10)
    # The longest the Router waits for one request, retries included: above every model's
    # timeout_s (the replica answers its own 504 first), below http_options.request_timeout_s.
    request_timeout_s: float = Field(default=85.0, gt=0)
    # Each model is served by the application `<model_app_prefix><name>`; a prefix lets one
    # cluster run two copies of the API side by side.
    model_app_prefix: str = Field(default="", pattern=r"^[a-z0-9_-]*$")

    @field_validator("models")
    @classmethod
    def _names_are_routable(cls, models: list[str]) -> list[str]:
        for name in models:
            if not MODEL_NAME.match(name):
                raise ValueError(
                    f"model name {name!r} must be lowercase letters, digits, '-' or '_' "
                    "(it becomes a deployment name)"
                )
        if len(set(models)) != len(models):
            raise ValueError(f"models {models} names a model twice")
        return models

    @model_validator(mode="after")
    def _routes_point_at_models(self) -> AppArgs:
        for field in ("default_model", "classify_model"):
            name = getattr(self, field)
            if name not in self.models:
                raise ValueError(f"{field} {name!r} is not one of the models {sorted(self.models)}")
        return self

    def model_app(self, name: str) -> str:
        """The application that serves model `name`."""
        return f"{self.model_app_prefix}{name}"


class CanaryRoute(Strict):
    """Where the Router sends a share of one model's traffic: its canary's application."""

    version: str = Field(pattern=VERSION)
    share: float = Field(ge=0.0, le=100.0)  # percent


class RolloutRecord(Strict):
    """How a model's canary ended; the deployer does not try that version again."""

    version: str = Field(pattern=VERSION)
    outcome: Literal["promoted", "rolled_back"]


class RouterUserConfig(Strict):
    """The Router's `user_config`, applied live (no restart): the canaries' traffic shares,
    written by the deployer (scripts/deploy.py) as a rollout moves, and how the last canary of
    each model ended (the rollout state, kept with the deployed config in the GCS)."""

    canaries: dict[str, CanaryRoute] = {}
    rollouts: dict[str, RolloutRecord] = {}


CANARY_SUFFIX = "-canary"


def canary_app(stable_app: str) -> str:
    """The application that serves a model's canary, beside `stable_app`."""
    return f"{stable_app}{CANARY_SUFFIX}"


class ModelAppArgs(Strict):
    """A model application's `args`: the API's shared limits, the model's name (its route
    `/models/<name>/predict`) and its spec."""

    api: ApiLimits = ApiLimits()
    model: str = Field(pattern=MODEL_NAME.pattern)
    spec: ModelSpec

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s or self.api.inference_timeout_s


def resolve_source(name: str, spec: ModelSpec, model_dir: str | None) -> str:
    """Where to load `name` from: its prepared directory (a config and weights) if there is one,
    `<name>@<version>` (a canary's, or a promoted canary's) before `<name>`, else `spec.source`."""
    if model_dir:
        for prepared in (
            Path(model_dir) / f"{name}@{spec.effective_version}",
            Path(model_dir) / name,
        ):
            weights = [*prepared.glob("*.safetensors"), *prepared.glob("pytorch_model*.bin")]
            if (prepared / "config.json").is_file() and weights:
                return str(prepared)
    return spec.source


def parse_args(raw: dict[str, Any] | AppArgs) -> AppArgs:
    """Validate the builder's args; pydantic's error names the failing field (`api.x`)."""
    return raw if isinstance(raw, AppArgs) else AppArgs.model_validate(raw)


def parse_model_args(raw: dict[str, Any] | ModelAppArgs) -> ModelAppArgs:
    return raw if isinstance(raw, ModelAppArgs) else ModelAppArgs.model_validate(raw)
