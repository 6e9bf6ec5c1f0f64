"""Request and response bodies of the HTTP API, named by role."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic.json_schema import SkipJsonSchema


class PredictRequest(BaseModel):
    """`POST /predict`: which model, and the text to run it on."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | SkipJsonSchema[None] = Field(
        default=None,
        description="A name listed by GET /models; omitted: the configured `default_model`.",
    )
    text: StrictStr = Field(min_length=1, description="Input text; must not be blank.")

    @field_validator("model", mode="before")
    @classmethod
    def _omitted_not_null(cls, value: object) -> object:
        # Omitting `model` picks the default; an explicit null is a client error, as before.
        if value is None:
            raise ValueError("model must be a string; omit it for the default model")
        return value


class ClassifyRequest(BaseModel):
    """`POST /classify`: the seed's single-model sentiment route."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(min_length=1)


class ModelPredictRequest(ClassifyRequest):
    """`POST /models/<name>/predict`: the text; the path names the model."""


class SentimentResult(BaseModel):
    model: str
    label: str
    score: float


class SummaryResult(BaseModel):
    model: str
    summary: str


class EmbeddingResult(BaseModel):
    model: str
    embedding: list[float]
    dim: int


class ClassifyResult(BaseModel):
    label: str
    score: float


class CanaryInfo(BaseModel):
    """A model's canary: its version and the share of the model's traffic it gets now."""

    version: str
    share: float = Field(description="Percent of /predict and /classify traffic for the model.")


class ModelInfo(BaseModel):
    """One model in `GET /models`; batching and autoscaling are read from a live replica, and
    only `name` is known of a model whose replicas are not up."""

    name: str
    task: str | None
    source: str | None
    version: str | None = Field(description="The stable version.")
    batching: dict[str, float | int]
    autoscaling: dict[str, object] | None
    max_ongoing_requests: int | None
    num_cpus: float | None
    canary: CanaryInfo | None = None


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    """Every non-2xx response of the API has this shape."""

    error: Literal[
        "malformed_json",
        "unknown_model",
        "body_too_large",
        "invalid_request",
        "not_found",
        "method_not_allowed",
        "overloaded",
        "not_ready",
        "timeout",
        "inference_failed",
        "internal",
    ]
    detail: str | list[dict[str, object]]


def answer(body: dict[str, Any]) -> JSONResponse:
    """A result the model built, serialized once. The routes keep their `response_model` for the
    OpenAPI document, but FastAPI does not validate a returned Response again (against a union of
    three result schemas, on every request)."""
    return JSONResponse(body)
