"""Application metrics, exported by every node's metrics agent (port 8080) as `ray_model_*` (the
model replicas) and `ray_router_*` (the Router).

Serve adds the `deployment`, `replica` and `application` tags itself; `model` is the model's name.
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

    def __init__(self, model: str) -> None:
        self.inference_latency_ms = Histogram(
            "model_inference_latency_ms",
            description="Wall time of one batched forward pass (or generate call), in ms.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model",),
        )
        self.batch_size = Histogram(
            "model_batch_size",
            description="Number of requests served together in one batch.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=("model",),
        )
        self.input_chars = Histogram(
            "model_input_chars",
            description="Length of each input text, in characters.",
            boundaries=INPUT_CHARS_BOUNDARIES,
            tag_keys=("model",),
        )
        self.errors = Counter(
            "model_errors",
            description="Failed batches, by exception type.",
            tag_keys=("model", "error_type"),
        )
        for metric in (self.inference_latency_ms, self.batch_size, self.input_chars, self.errors):
            metric.set_default_tags({"model": model})  # Serve adds its own tags to the dict

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
    """`ray_router_responses_total`: every answer of the API by model, route and status code.

    The Router's own 503 (overload), 504 (timeout) and 500 are normal responses to Serve, which
    counts only exceptions, so without this they would be invisible to the error-ratio rule and
    its alert. `model` is a configured model's name or empty (a request that names none, so
    clients cannot grow the label set); `route` is one of ROUTES or `other`. `aliases` name the
    route of a path within the application (a model application's `/predict` is MODEL_ROUTE);
    `model` labels the answers no handler named a model for (a model application's own model).
    """

    def __init__(
        self, routes: dict[str, list[str]], aliases: dict[str, str] | None = None, model: str = ""
    ) -> None:
        self.aliases = aliases or {}
        self.model = model
        self.counter = Counter(
            "router_responses",
            description="Answers of the API by model, route and HTTP status code.",
            tag_keys=("model", "route", "code"),
        )
        # Each model's server-error series start at 0: a counter first seen at N (the first
        # burst of 503s) has no increase for rate() to see. Ray's public inc() refuses 0.
        for route, models in routes.items():
            for model in models:
                for code in SERVER_ERRORS:
                    self.counter._record(0.0, tags={"model": model, "route": route, "code": code})

    def count(self, model: str, path: str, status: int) -> None:
        route = self.aliases.get(path, path)
        if route not in ROUTES:
            route = MODEL_ROUTE if MODEL_PATH.match(route) else "other"
        self.counter.inc(tags={"model": model, "route": route, "code": str(status)})


class ResponseCounter:
    """ASGI middleware that hands every answer's status to the app's `state.responses`
    (an ApiResponses), with the model a handler put in `scope["state"]["model"]`."""

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
            model = scope.get("state", {}).get("model", responses.model)
            # The path within the application, without its route_prefix (Serve's root_path).
            path, root = scope.get("path", ""), scope.get("root_path", "")
            responses.count(model, path.removeprefix(root) if root else path, status)
