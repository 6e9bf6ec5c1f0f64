"""The ingress: FastAPI routes, input validation, and one DeploymentHandle per model."""

# No `from __future__ import annotations`: FastAPI reads the real types off the methods that
# `serve.ingress` rebinds.
import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve import metrics
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RequestCancelledError,
)
from ray.serve.handle import DeploymentHandle

from serve.config import AppArgs
from serve.errors import ApiError, BodySizeLimit, install_error_handlers
from serve.metrics import ApiResponses, ResponseCounter
from serve.schemas import (
    ClassifyRequest,
    ClassifyResult,
    EmbeddingResult,
    ErrorBody,
    ModelInfo,
    ModelsResponse,
    PredictRequest,
    SentimentResult,
    SummaryResult,
)

logger = logging.getLogger("ray.serve")

# The replica or its node died mid-request: safe to send again, to another replica.
RETRYABLE = (RayActorError, ReplicaUnavailableError)
RETRY_BACKOFF_S = 0.05

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed JSON.",
        404: "Unknown model; the detail lists the available ones.",
        413: "Body too large.",
        422: "Missing, empty, non-string or too long text.",
        503: "Overloaded or not ready; retry after `Retry-After` seconds.",
        504: "Inference did not finish within the configured timeout.",
    }.items()
}

api = FastAPI(
    title="Ray Serve multi-model API",
    version="0.1.0",
    description="Sentiment, summarization and embeddings behind one endpoint.",
)
api.add_middleware(BodySizeLimit)
api.add_middleware(ResponseCounter)  # outermost: counts BodySizeLimit's 413 too
install_error_handlers(api)


@serve.deployment
@serve.ingress(api)
class Router:
    """Validates requests and forwards each to the named model's deployment."""

    def __init__(self, args: AppArgs, models: dict[str, DeploymentHandle]) -> None:
        self.args = args
        self.models = models
        self.retries = metrics.Counter(
            "router_retries",
            description="Inference requests sent again because their replica or node died.",
            tag_keys=("model", "reason"),
        )
        api.state.max_body_bytes = args.max_body_bytes
        api.state.responses = ApiResponses(
            {"/predict": list(args.models), "/classify": [args.classify_model]}
        )

    @api.post(
        "/predict",
        response_model=SentimentResult | SummaryResult | EmbeddingResult,
        responses=ERRORS,
    )
    async def predict(self, request: PredictRequest, http: Request) -> dict[str, Any]:
        model = request.model or self.args.default_model
        result = await self._infer(model, request.text, http)
        return {"model": model, **result}

    @api.post("/classify", response_model=ClassifyResult, responses=ERRORS)
    async def classify(self, request: ClassifyRequest, http: Request) -> dict[str, Any]:
        result = await self._infer(self.args.classify_model, request.text, http)
        return {"label": result["label"], "score": result["score"]}

    @api.get("/models", response_model=ModelsResponse)
    async def list_models(self) -> dict[str, Any]:
        infos = await asyncio.gather(*(self._describe(name) for name in self.models))
        return {"models": infos}

    async def _describe(self, name: str) -> ModelInfo:
        try:
            live = await asyncio.wait_for(self.models[name].describe.remote(), timeout=5)
            return ModelInfo(**live)
        except Exception:  # a model still starting is listed from its static config
            spec = self.args.models[name]
            return ModelInfo(
                name=name,
                task=spec.task.value,
                source=spec.source,
                batching={},
                autoscaling=None,
                max_ongoing_requests=None,
                num_cpus=None,
            )

    async def _infer(self, model: str, text: str, http: Request) -> dict[str, Any]:
        handle = self.models.get(model)
        if handle is None:
            raise ApiError(
                404,
                "unknown_model",
                f"Unknown model {model!r}. Available: {sorted(self.models)}",
            )
        http.state.model = model  # ResponseCounter's `model` label: a configured name only
        if not text.strip():
            raise ApiError(422, "invalid_request", "text must not be blank")
        if len(text) > self.args.max_text_chars:
            raise ApiError(
                422,
                "invalid_request",
                f"text has {len(text)} characters; the limit is {self.args.max_text_chars}",
            )
        retry = {"Retry-After": str(self.args.retry_after_s)}
        timeout_s = self.args.models[model].timeout_s or self.args.inference_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        for attempt in range(self.args.max_retries + 1):
            response = handle.predict.remote(text)
            try:
                remaining = deadline - asyncio.get_running_loop().time()
                return await asyncio.wait_for(response, timeout=max(remaining, 0.001))
            except TimeoutError:
                response.cancel()
                raise ApiError(
                    504, "timeout", f"Model {model!r} did not answer within {timeout_s}s"
                ) from None
            except BackPressureError as exc:
                raise ApiError(503, "overloaded", str(exc), retry) from None
            except RETRYABLE as exc:
                if attempt == self.args.max_retries:
                    raise ApiError(
                        503,
                        "not_ready",
                        f"Model {model!r} lost its replica {attempt + 1} times: "
                        f"{type(exc).__name__}",
                        retry,
                    ) from None
                self.retries.inc(tags={"model": model, "reason": type(exc).__name__})
                await asyncio.sleep(min(RETRY_BACKOFF_S * 2**attempt, 1.0))
            except (DeploymentUnavailableError, RequestCancelledError) as exc:
                raise ApiError(
                    503, "not_ready", f"Model {model!r} is not ready: {type(exc).__name__}", retry
                ) from None
            except RayTaskError as exc:
                # The cause stays in the logs: its text may carry the model's internals.
                logger.warning("Model %r failed: %r", model, exc.cause)
                raise ApiError(
                    500, "inference_failed", f"Model {model!r} failed; its replica's log says why"
                ) from None
        raise AssertionError("unreachable: the last attempt returns or raises")
