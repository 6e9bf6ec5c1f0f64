"""The API's ingress at `/`: FastAPI routes, input validation, and one DeploymentHandle per model
(each model is an application of its own: `AppArgs.model_app`), plus one per canary, which gets
its share of the model's traffic (`RouterUserConfig`, changed live by the deployer)."""

# No `from __future__ import annotations`: FastAPI reads the real types off the methods that
# `serve.ingress` rebinds.
import asyncio
import logging
import random
from typing import Any, NoReturn

from fastapi import Request
from fastapi.responses import JSONResponse
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

from serve.config import AppArgs, CanaryRoute, RouterUserConfig, canary_app
from serve.errors import (
    ERROR_RESPONSES,
    ApiError,
    ModelTimeout,
    Overloaded,
    check_text,
    json_api,
)
from serve.metrics import ApiResponses
from serve.schemas import (
    CanaryInfo,
    ClassifyRequest,
    ClassifyResult,
    EmbeddingResult,
    ModelInfo,
    ModelPredictRequest,
    ModelsResponse,
    PredictRequest,
    SentimentResult,
    SummaryResult,
    answer,
)

logger = logging.getLogger("ray.serve")

# The replica or its node died mid-request: safe to send again, to another replica.
RETRYABLE = (RayActorError, ReplicaUnavailableError)
RETRY_BACKOFF_S = 0.05

api = json_api(
    "Ray Serve multi-model API", "Sentiment, summarization and embeddings behind one endpoint."
)


@serve.deployment
@serve.ingress(api)
class Router:
    """Validates requests and forwards each to the named model's deployment."""

    def __init__(self, args: AppArgs) -> None:
        self.args = args
        # Each model's application may deploy after this one: the handle resolves on first use,
        # and a model not running yet answers 503 not_ready.
        self.models: dict[str, DeploymentHandle] = {
            name: serve.get_deployment_handle(
                name, app_name=args.model_app(name), _check_exists=False
            )
            for name in args.models
        }
        self.canaries: dict[str, CanaryRoute] = {}
        self.canary_handles: dict[str, DeploymentHandle] = {}
        # The stable version each model last answered with: the `version` of its failures.
        self.versions: dict[str, str] = {}
        self.retries = metrics.Counter(
            "router_retries",
            description="Inference requests sent again because their replica or node died.",
            tag_keys=("model", "reason"),
        )
        api.state.max_body_bytes = args.api.max_body_bytes
        api.state.responses = ApiResponses(
            {"/predict": list(args.models), "/classify": [args.classify_model]}
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply the canaries' shares (`RouterUserConfig`) without a restart."""
        config = RouterUserConfig.model_validate(user_config or {})
        self.canaries = {m: c for m, c in config.canaries.items() if m in self.models}
        for model, canary in self.canaries.items():
            api.state.responses.expect(model, canary.version)
            if model not in self.canary_handles:
                self.canary_handles[model] = serve.get_deployment_handle(
                    model, app_name=canary_app(self.args.model_app(model)), _check_exists=False
                )
        logger.info(
            "Canary shares: %s",
            {m: f"{c.version} {c.share:g}%" for m, c in self.canaries.items()} or "none",
        )

    @api.post(
        "/predict",
        response_model=SentimentResult | SummaryResult | EmbeddingResult,
        responses=ERROR_RESPONSES,
    )
    async def predict(self, request: PredictRequest, http: Request) -> JSONResponse:
        model = request.model or self.args.default_model
        result = await self._infer(model, request.text, http)
        return answer({"model": model, **result})

    @api.post("/classify", response_model=ClassifyResult, responses=ERROR_RESPONSES)
    async def classify(self, request: ClassifyRequest, http: Request) -> JSONResponse:
        result = await self._infer(self.args.classify_model, request.text, http)
        return answer({"label": result["label"], "score": result["score"]})

    @api.post(
        "/models/{name}/predict",
        response_model=SentimentResult | SummaryResult | EmbeddingResult,
        responses=ERROR_RESPONSES,
        summary="Predict with one model, without the Router",
    )
    async def model_predict(
        self, name: str, request: ModelPredictRequest, http: Request
    ) -> JSONResponse:
        """Serve's ingress sends a configured model's path straight to that model's own
        application; only an unknown name (404), or a model whose application is not serving,
        reaches the Router."""
        result = await self._infer(name, request.text, http)
        return answer({"model": name, **result})

    @api.get("/models", response_model=ModelsResponse)
    async def list_models(self) -> dict[str, Any]:
        infos = await asyncio.gather(*(self._describe(name) for name in self.models))
        return {"models": infos}

    async def _describe(self, name: str) -> ModelInfo:
        canary = self.canaries.get(name)
        info = CanaryInfo(version=canary.version, share=canary.share) if canary else None
        try:
            live = await asyncio.wait_for(self.models[name].describe.remote(), timeout=5)
            return ModelInfo(**live, canary=info)
        except Exception:  # a model still starting is listed by name only
            return ModelInfo(
                name=name,
                task=None,
                source=None,
                version=self.versions.get(name),
                batching={},
                autoscaling=None,
                max_ongoing_requests=None,
                num_cpus=None,
                canary=info,
            )

    def _pick(self, model: str) -> tuple[DeploymentHandle, str | None]:
        """The model's stable handle, or its canary's for the canary's share of requests
        (with the canary's version)."""
        canary = self.canaries.get(model)
        if canary is not None and canary.share > 0 and random.uniform(0, 100) < canary.share:
            return self.canary_handles[model], canary.version
        return self.models[model], None

    async def _infer(self, model: str, text: str, http: Request) -> dict[str, Any]:
        handle = self.models.get(model)
        if handle is None:
            raise ApiError(
                404,
                "unknown_model",
                f"Unknown model {model!r}. Available: {sorted(self.models)}",
            )
        http.state.model = model  # ResponseCounter's `model` label: a configured name only
        check_text(text, self.args.api.max_text_chars)
        retry = {"Retry-After": str(self.args.api.retry_after_s)}
        timeout_s = self.args.request_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        handle, version = self._pick(model)
        for attempt in range(self.args.max_retries + 1):
            http.state.version = version or self.versions.get(model, "")
            response = handle.predict.remote(text)
            try:
                remaining = deadline - asyncio.get_running_loop().time()
                result = await asyncio.wait_for(response, timeout=max(remaining, 0.001))
            except TimeoutError:
                response.cancel()
                raise ApiError(
                    504, "timeout", f"Model {model!r} did not answer within {timeout_s}s"
                ) from None
            except BackPressureError as exc:
                raise ApiError(503, "overloaded", str(exc), retry) from None
            except (Overloaded, ModelTimeout) as exc:  # the replica's own limits
                raise self._limit(exc, retry) from None
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
                handle, version = self.models[model], None  # a retry goes to the stable version
            except (DeploymentUnavailableError, RequestCancelledError) as exc:
                if version is not None:  # the canary's application went away: stable serves
                    logger.warning("Canary of %r unavailable (%r): stable serves", model, exc)
                    handle, version = self.models[model], None
                    continue
                raise ApiError(
                    503, "not_ready", f"Model {model!r} is not ready: {type(exc).__name__}", retry
                ) from None
            except RayTaskError as exc:  # Ray actor calls wrap the model's exception
                if isinstance(exc.cause, Overloaded | ModelTimeout):
                    raise self._limit(exc.cause, retry) from None
                self._failed(model, exc.cause)
            except Exception as exc:  # direct gRPC (throughput mode) raises it as it was
                self._failed(model, exc)
            else:
                answered = result.pop("version", "")
                if version is None and answered:
                    self.versions[model] = answered
                http.state.version = answered
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _limit(exc: Exception, retry: dict[str, str]) -> ApiError:
        """The replica's own limits: its admission bound (503) and its model's timeout (504)."""
        if isinstance(exc, ModelTimeout):
            return ApiError(504, "timeout", str(exc))
        return ApiError(503, "overloaded", str(exc), retry)

    @staticmethod
    def _failed(model: str, cause: BaseException) -> NoReturn:
        # The cause stays in the logs: its text may carry the model's internals.
        logger.warning("Model %r failed: %r", model, cause)
        raise ApiError(
            500, "inference_failed", f"Model {model!r} failed; its replica's log says why"
        ) from None
