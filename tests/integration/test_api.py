"""Every route and every error status of the HTTP contract, through Serve's real HTTP proxy."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from ray import serve

from tests.conftest import deployment_of
from tests.integration.conftest import RENAMED_APP, LocalCluster
from tests.integration.metrics import router_responses, router_responses_by_version

pytestmark = pytest.mark.integration

SUMMARY_INPUT = (
    "Ray Serve is a scalable model serving library for building online inference APIs. "
    "It is framework-agnostic, so you can use a single toolkit to serve everything from deep "
    "learning models to arbitrary Python business logic, and it scales replicas with traffic."
)


def post(url: str, body: object, **kwargs: object) -> requests.Response:
    return requests.post(url, json=body, timeout=60, **kwargs)


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == code, body
    assert body["detail"]
    return body


def assert_overload_answers_503(url: str) -> None:
    """16 concurrent requests to a strict API's `url`: some 503 `overloaded` with Retry-After,
    some 200."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: post(url, {"text": "hello " * 200}), range(16)))
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected, [r.status_code for r in responses]
    for resp in rejected:
        assert_error(resp, 503, "overloaded")
        assert int(resp.headers["Retry-After"]) >= 1
    assert any(r.status_code == 200 for r in responses)


def assert_failed_batch_answers_500(url: str) -> None:
    """The renamed API's `mood` replica fails its next batch: `url` answers a JSON 500 naming the
    model, not the exception, then serves again."""
    handle = serve.get_deployment_handle("mood", app_name=f"{RENAMED_APP}-mood")
    handle.fail_next_batches.remote(1).result(timeout_s=30)
    body = assert_error(post(url, {"text": "x"}), 500, "inference_failed")
    assert "mood" in body["detail"]
    assert "RuntimeError" not in body["detail"] and "injected" not in body["detail"], body
    assert post(url, {"text": "x"}).status_code == 200


def test_predict_seed_sentiment_request(api: str) -> None:
    resp = post(f"{api}/predict", {"model": "sentiment", "text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "sentiment"
    assert body["label"] in {"POSITIVE", "NEGATIVE"}
    assert 0.0 <= body["score"] <= 1.0


def test_predict_defaults_to_sentiment(api: str) -> None:
    resp = post(f"{api}/predict", {"text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "sentiment"


def test_predict_without_model_uses_configured_default(api: str) -> None:
    """The `renamed` app's only model is `mood`, its `default_model`."""
    resp = post(f"{api}/renamed/predict", {"text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "mood"
    assert resp.json()["label"] in {"POSITIVE", "NEGATIVE"}
    body = assert_error(
        post(f"{api}/renamed/predict", {"model": "sentiment", "text": "x"}), 404, "unknown_model"
    )
    assert "mood" in body["detail"]


def test_predict_seed_summarization_request(api: str) -> None:
    resp = post(f"{api}/predict", {"model": "summarization", "text": SUMMARY_INPUT})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "summarization"
    assert isinstance(body["summary"], str) and body["summary"]


def test_classify_seed_request(api: str) -> None:
    resp = post(f"{api}/classify", {"text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"label", "score"}


def test_classify_accepts_curl_form_content_type(api: str) -> None:
    resp = requests.post(f"{api}/classify", data='{"text": "Ray Serve is great"}', timeout=60)
    assert resp.status_code == 200, resp.text


def embed(api: str, text: str) -> list[float]:
    resp = post(f"{api}/predict", {"model": "embedding", "text": text})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["dim"] == len(body["embedding"]) == 384
    return body["embedding"]


def test_embedding_is_normalized_and_meaningful(api: str) -> None:
    cat, kitten, stocks = (
        embed(api, t)
        for t in (
            "A cat sits on the mat",
            "A kitten is sitting on a rug",
            "Stock markets fell sharply today",
        )
    )
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-4)
    cosine = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731 (unit vectors)
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2


def test_models_lists_live_settings(cluster: LocalCluster, api: str) -> None:
    """What the deployed config set, read from the live replicas."""
    resp = requests.get(f"{api}/models", timeout=30)
    assert resp.status_code == 200
    models = {m["name"]: m for m in resp.json()["models"]}
    assert set(models) == {"sentiment", "summarization", "embedding"}
    assert models["summarization"]["task"] == "summarization"
    embedding = deployment_of(cluster.base_config, "embedding")
    assert (
        models["embedding"]["batching"]["max_batch_size"]
        == (embedding["user_config"]["max_batch_size"])
    )
    sentiment = deployment_of(cluster.base_config, "sentiment")
    assert models["sentiment"]["autoscaling"]["min_replicas"] == 2  # test_config's
    assert models["sentiment"]["max_ongoing_requests"] == sentiment["max_ongoing_requests"]
    for model in models.values():
        assert model["version"] == "1", model  # the shipped specs' version
        assert model["canary"] is None, model


def test_openapi_and_docs_served(api: str) -> None:
    spec = requests.get(f"{api}/openapi.json", timeout=30).json()
    assert {"/predict", "/classify", "/models", "/models/{name}/predict"} <= set(spec["paths"])
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]
    assert requests.get(f"{api}/docs", timeout=30).status_code == 200


def test_ray_healthz_and_routes_reachable(api: str) -> None:
    assert requests.get(f"{api}/-/healthz", timeout=30).status_code == 200
    routes = requests.get(f"{api}/-/routes", timeout=30).json()
    assert routes.get("/") == "models"
    for model in ("sentiment", "summarization", "embedding"):
        assert routes.get(f"/models/{model}") == model, routes


def test_predict_malformed_json_is_400(api: str) -> None:
    resp = requests.post(
        f"{api}/predict", data="{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert_error(resp, 400, "malformed_json")


def test_predict_unknown_model_is_404_listing_models(api: str) -> None:
    body = assert_error(
        post(f"{api}/predict", {"model": "translation", "text": "hi"}), 404, "unknown_model"
    )
    for name in ("sentiment", "summarization", "embedding"):
        assert name in body["detail"]


def test_predict_body_too_large_is_413(api: str) -> None:
    resp = post(f"{api}/predict", {"text": "a" * 70_000})
    assert_error(resp, 413, "body_too_large")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "   "},
        {"text": 42},
        {"text": ["a"]},
        {"model": 3, "text": "hi"},
        {"text": "hi", "unexpected": 1},
        {"text": "a" * 10_001},
        [],
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "number",
        "list",
        "model-number",
        "extra-field",
        "too-long",
        "array",
    ],
)
def test_predict_invalid_fields_are_422(api: str, body: object) -> None:
    assert_error(post(f"{api}/predict", body), 422, "invalid_request")


def test_unknown_route_and_method_are_json(api: str) -> None:
    assert_error(requests.get(f"{api}/nope", timeout=30), 404, "not_found")
    assert_error(requests.get(f"{api}/predict", timeout=30), 405, "method_not_allowed")


def test_inference_timeout_is_504(api: str) -> None:
    # The "hasty" app allows inference less time than one round trip to a replica.
    resp = post(f"{api}/hasty/classify", {"text": "Ray Serve is great"})
    body = assert_error(resp, 504, "timeout")
    assert "sentiment" in body["detail"]


def test_overload_is_503_with_retry_after(api: str) -> None:
    # The "strict" API's replica admits one request; the next is answered 503 by the replica.
    assert_overload_answers_503(f"{api}/strict/classify")


def test_failed_inference_is_500_without_internals(api: str) -> None:
    """A model that raises gives the client a JSON 500 naming the model, not the exception."""
    assert_failed_batch_answers_500(f"{api}/renamed/predict")


def test_every_answer_is_counted_by_model_and_status(cluster: LocalCluster, api: str) -> None:
    """`ray_router_responses_total` counts the Router's own 5xx answers (which Serve's error
    counter never sees) and client errors, with a model label only for configured models."""
    post(f"{api}/predict", {"model": "nope", "text": "x"})  # 404, no such model
    post(f"{api}/predict", {"text": ""})  # 422 for sentiment, the default
    post(f"{api}/hasty/classify", {"text": "too slow"})  # 504
    handle = serve.get_deployment_handle("mood", app_name=f"{RENAMED_APP}-mood")
    handle.fail_next_batches.remote(1).result(timeout_s=30)
    post(f"{api}/renamed/predict", {"text": "x"})  # 500
    with ThreadPoolExecutor(max_workers=16) as pool:  # 503s: strict's replica admits 1
        list(pool.map(lambda _: post(f"{api}/strict/classify", {"text": "hi " * 200}), range(16)))
    wanted = {
        ("models", "", "/predict", "404"),
        ("models", "sentiment", "/predict", "422"),
        ("models", "sentiment", "/predict", "200"),
        ("hasty", "sentiment", "/classify", "504"),
        ("strict", "sentiment", "/classify", "503"),
        ("renamed", "mood", "/predict", "500"),
    }
    counted: dict = {}
    deadline = time.monotonic() + 30  # the metrics agent exports every few seconds
    while time.monotonic() < deadline:
        counted = router_responses(cluster.metrics_text())
        if wanted <= counted.keys():
            break
        time.sleep(2)
    assert wanted <= counted.keys(), sorted(counted)
    configured = {"", "sentiment", "summarization", "embedding", "mood"}
    assert {model for _, model, _, _ in counted} <= configured, sorted(counted)
    # Every model's server-error series exist from the Router's start, at 0 until an error.
    for model in ("sentiment", "summarization", "embedding"):
        for code in ("500", "503", "504"):
            assert ("models", model, "/predict", code) in counted, (model, code, sorted(counted))
    assert counted[("models", "summarization", "/predict", "503")] == 0
    # An answer carries the version of the model that gave it ("" where none answered).
    by_version = router_responses_by_version(cluster.metrics_text())
    answered = ("models", "sentiment", "1", "/predict", "200")
    assert by_version.get(answered, 0) > 0, sorted(by_version)
    assert {version for _, _, version, _, _ in by_version} <= {"", "1"}, sorted(by_version)
