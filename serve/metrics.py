"""Application metrics, exported by every node's metrics agent (port 8080) as `ray_model_*` (the
model replicas) and `ray_router_*` (the Router).

Serve adds the `deployment`, `replica` and `application` tags itself; `model` is the model's name
and `version` the model version that answered (a canary's, or the stable one's).
"""

from __future__ import annotations

import asyncio
import re

from ray.serve.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_MS_BOUNDARIES = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
INPUT_CHARS_BOUNDARIES = [16, 64, 256, 1024, 4096, 16384]


class ModelMetrics:
    """The four series a model replica reports; one instance per replica."""

    def __init__(self, model: str, version: str) -> None:
        self.inference_latency_ms = Histogram(
            "model_inference_latency_ms",
            description="Wall time of one batched forward pass (or generate call), in ms.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.batch_size = Histogram(
            "model_batch_size",
            description="Number of requests served together in one batch.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.input_chars = Histogram(
            "model_input_chars",
            description="Length of each input text, in characters.",
            boundaries=INPUT_CHARS_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.errors = Counter(
            "model_errors",
            description="Failed batches, by exception type.",
            tag_keys=("model", "version", "error_type"),
        )
        for metric in (self.inference_latency_ms, self.batch_size, self.input_chars, self.errors):
            # Serve adds its own tags to the dict.
            metric.set_default_tags({"model": model, "version": version})

    def record_batch(self, texts: list[str], latency_ms: float) -> None:
        self.batch_size.observe(len(texts))
        self.inference_latency_ms.observe(latency_ms)
        for text in texts:
            self.input_chars.observe(len(text))

    def record_error(self, error: BaseException) -> None:
        self.errors.inc(tags={"error_type": type(error).__name__})


# A model's own route, as the `route` label names it (the model is the `model` label).
MODEL_ROUTE = "/models/{name}/predict"
MODEL_PATH = re.compile(r"^/models/[^/]+/predict$")
ROUTES = ("/predict", "/classify", "/models", MODEL_ROUTE)
SERVER_ERRORS = ("500", "503", "504")


class ApiResponses:
    """`ray_router_responses_total`: every answer of the API by model, version, route and
    status code.

    The Router's own 503 (overload), 504 (timeout) and 500 are normal responses to Serve, which
    counts only exceptions, so without this they would be invisible to the error-ratio rule and
    its alert. `model` is a configured model's name or empty (a request that names none, so
    clients cannot grow the label set); `version` the model version that answered, or was asked
    (empty before a model is chosen); `route` is one of ROUTES or `other`. `aliases` name the
    route of a path within the application (a model application's `/predict` is MODEL_ROUTE);
    `model` labels the answers no handler named a model for (a model application's own model).
    """

    def __init__(
        self,
        routes: dict[str, list[str]],
        aliases: dict[str, str] | None = None,
        model: str = "",
        version: str = "",
    ) -> None:
        self.aliases = aliases or {}
        self.model = model
        self.version = version
        self.counter = Counter(
            "router_responses",
            description="Answers of the API by model, route and HTTP status code.",
            tag_keys=("model", "version", "route", "code"),
        )
        self.routes = routes
        self.seen: set[tuple[str, str]] = set()
        for model in {m for models in routes.values() for m in models}:
            self._start_at_zero(model, version)

    def expect(self, model: str, version: str) -> None:
        """A version about to get traffic (a canary): its answers' series start at 0 too, so
        the controller's first increase() over them already counts its first answers."""
        if (model, version) not in self.seen:
            self._start_at_zero(model, version, ("200", *SERVER_ERRORS))

    def _start_at_zero(
        self, model: str, version: str, codes: tuple[str, ...] = SERVER_ERRORS
    ) -> None:
        """Each model's (and version's) server-error series start at 0: a counter first seen
        at N (the first burst of 503s) has no increase for rate() to see. Ray's public inc()
        refuses 0."""
        self.seen.add((model, version))
        for route, models in self.routes.items():
            if model in models:
                for code in codes:
                    tags = {"model": model, "version": version, "route": route, "code": code}
                    self.counter._record(0.0, tags=tags)

    def count(self, model: str, version: str, path: str, status: int) -> None:
        if (model, version) not in self.seen:
            self._start_at_zero(model, version)
        route = self.aliases.get(path, path)
        if route not in ROUTES:
            route = MODEL_ROUTE if MODEL_PATH.match(route) else "other"
        tags = {"model": model, "version": version, "route": route, "code": str(status)}
        self.counter.inc(tags=tags)


class ResponseCounter:
    """ASGI middleware that hands every answer's status to the app's `state.responses`
    (an ApiResponses), with the model and version a handler put in `scope["state"]`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        responses = getattr(getattr(scope.get("app"), "state", None), "responses", None)
        if scope["type"] != "http" or responses is None:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering
        started = False

        async def record_status(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except asyncio.CancelledError:
            if not started:
                status = 499  # cancelled before answering: the client hung up (Serve's code)
            raise
        finally:
            state = scope.get("state", {})
            model = state.get("model", responses.model)
            version = state.get("version", responses.version)
            # The path within the application, without its route_prefix (Serve's root_path).
            path, root = scope.get("path", ""), scope.get("root_path", "")
            responses.count(model, version, path.removeprefix(root) if root else path, status)
