"""The error contract's HTTP layer on a bare FastAPI app (no Ray)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serve.errors import ApiError, BodySizeLimit, install_error_handlers
from serve.schemas import PredictRequest


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.add_middleware(BodySizeLimit)
    app.state.max_body_bytes = 2048
    install_error_handlers(app)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        model = request.model or "sentiment"
        if model != "sentiment":
            raise ApiError(404, "unknown_model", "nope", {"X-Test": "1"})
        return {"model": model, "chars": len(request.text)}

    @app.post("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internals")

    @app.post("/boom/{model}")
    async def boom_serving(model: str, http: Request) -> dict:
        http.state.model = model
        raise RuntimeError("secret internals")

    return TestClient(app, raise_server_exceptions=False)


def test_valid_request_passes(client: TestClient) -> None:
    resp = client.post("/predict", json={"text": "hello"})
    assert resp.status_code == 200
    assert resp.json() == {"model": "sentiment", "chars": 5}


def test_form_content_type_is_read_as_json(client: TestClient) -> None:
    resp = client.post(
        "/predict",
        content=b'{"text": "hello"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200


def test_malformed_json_is_400(client: TestClient) -> None:
    resp = client.post(
        "/predict", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "malformed_json"


def test_invalid_field_is_422_with_location(client: TestClient) -> None:
    resp = client.post("/predict", json={"text": 3})
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert body["detail"][0]["loc"] == ["body", "text"]


def test_declared_oversize_body_is_413(client: TestClient) -> None:
    resp = client.post("/predict", json={"text": "x" * 5000})
    assert resp.status_code == 413
    assert resp.json()["error"] == "body_too_large"


def test_streamed_oversize_body_is_413(client: TestClient) -> None:
    def chunks():
        for _ in range(10):
            yield b"x" * 512

    resp = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_api_error_keeps_status_and_headers(client: TestClient) -> None:
    resp = client.post("/predict", json={"model": "other", "text": "hi"})
    assert resp.status_code == 404
    assert resp.headers["X-Test"] == "1"
    assert resp.json() == {"error": "unknown_model", "detail": "nope"}


def test_unhandled_error_is_json_500_without_internals(client: TestClient) -> None:
    resp = client.post("/boom")
    assert resp.status_code == 500
    assert resp.json()["error"] == "internal"
    assert "secret" not in resp.text and "RuntimeError" not in resp.text
    named = client.post("/boom/sentiment")
    assert named.status_code == 500 and "'sentiment'" in named.json()["detail"], named.text
    assert "secret" not in named.text and "RuntimeError" not in named.text


def test_unknown_route_is_json_404(client: TestClient) -> None:
    resp = client.get("/nowhere")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
