"""Request/response schemas of the HTTP API."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.schemas import ClassifyRequest, ErrorBody, PredictRequest


def test_predict_request_leaves_the_default_model_to_the_config() -> None:
    assert PredictRequest(text="Ray Serve is great").model is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": 1},
        {"text": None},
        {"text": "x", "model": 1},
        {"text": "x", "extra": 1},
    ],
)
def test_predict_request_rejects(body: dict) -> None:
    with pytest.raises(ValidationError):
        PredictRequest.model_validate(body)


def test_classify_request_rejects_bytes_like_values() -> None:
    with pytest.raises(ValidationError):
        ClassifyRequest.model_validate({"text": ["a", "b"]})


def test_error_body_codes_are_closed() -> None:
    assert ErrorBody(error="unknown_model", detail="x").error == "unknown_model"
    with pytest.raises(ValidationError):
        ErrorBody(error="oops", detail="x")
