"""`POST /models/<name>/predict`: Serve's ingress sends it to the model's own application, with
the Router's validation, error bodies and response metrics, and without the Router."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from ray import serve

from tests.integration.conftest import HASTY_APP, RENAMED_APP, STRICT_APP, LocalCluster
from tests.integration.metrics import router_responses, router_responses_by_version
from tests.integration.test_api import (
    SUMMARY_INPUT,
    assert_error,
    assert_failed_batch_answers_500,
    assert_overload_answers_503,
    post,
)

pytestmark = pytest.mark.integration

ROUTE = "/models/{name}/predict"


def model_url(api: str, model: str, prefix: str = "") -> str:
    return f"{api}{prefix}/models/{model}/predict"


def test_each_model_answers_on_its_own_route(api: str) -> None:
    sentiment = post(model_url(api, "sentiment"), {"text": "Ray Serve is great"})
    assert sentiment.status_code == 200, sentiment.text
    assert sentiment.json()["model"] == "sentiment"
    assert sentiment.json()["label"] in {"POSITIVE", "NEGATIVE"}
    embedding = post(model_url(api, "embedding"), {"text": "A cat sits on the mat"})
    assert embedding.status_code == 200, embedding.text
    assert embedding.json()["dim"] == len(embedding.json()["embedding"]) > 0
    summary = post(model_url(api, "summarization"), {"text": SUMMARY_INPUT})
    assert summary.status_code == 200, summary.text
    assert isinstance(summary.json()["summary"], str)


def test_same_answer_as_predict(api: str) -> None:
    text = "The same text through both routes"
    direct = post(model_url(api, "embedding"), {"text": text}).json()
    routed = post(f"{api}/predict", {"model": "embedding", "text": text}).json()
    assert direct == routed


def test_malformed_json_is_400(api: str) -> None:
    resp = requests.post(
        model_url(api, "sentiment"),
        data="{not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert_error(resp, 400, "malformed_json")


def test_unknown_model_is_404_listing_models(api: str) -> None:
    body = assert_error(post(model_url(api, "translation"), {"text": "hi"}), 404, "unknown_model")
    for name in ("sentiment", "summarization", "embedding"):
        assert name in body["detail"]


def test_unknown_path_and_method_are_json(api: str) -> None:
    assert_error(requests.get(model_url(api, "sentiment"), timeout=30), 405, "method_not_allowed")
    assert_error(post(f"{api}/models/sentiment/nope", {"text": "hi"}), 404, "not_found")


def test_body_too_large_is_413(api: str) -> None:
    assert_error(post(model_url(api, "sentiment"), {"text": "a" * 70_000}), 413, "body_too_large")


INVALID = {
    "missing": {},
    "empty": {"text": ""},
    "blank": {"text": "   "},
    "number": {"text": 42},
    "extra-field": {"text": "hi", "model": "sentiment"},
    "too-long": {"text": "a" * 10_001},
    "array": [],
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_invalid_fields_are_422(api: str, body: object) -> None:
    assert_error(post(model_url(api, "sentiment"), body), 422, "invalid_request")


def test_overload_is_503_with_retry_after(api: str) -> None:
    """The strict API's replica admits one request and answers the next 503 itself."""
    assert_overload_answers_503(model_url(api, "sentiment", f"/{STRICT_APP}"))


def test_timeout_is_504(api: str) -> None:
    resp = post(model_url(api, "sentiment", f"/{HASTY_APP}"), {"text": "Ray Serve is great"})
    assert "sentiment" in assert_error(resp, 504, "timeout")["detail"]


def test_failed_inference_is_500_without_internals(api: str) -> None:
    assert_failed_batch_answers_500(model_url(api, "mood", f"/{RENAMED_APP}"))


def test_answers_are_counted_by_the_model_not_the_router(cluster: LocalCluster, api: str) -> None:
    """Every status of the model route lands in `ray_router_responses_total` under the model's
    application with route `/models/{name}/predict`; the Router counts only the unknown name."""
    post(model_url(api, "sentiment"), {"text": "counted"})  # 200
    post(model_url(api, "sentiment"), {"text": " "})  # 422
    post(model_url(api, "sentiment"), {"text": "a" * 70_000})  # 413
    post(model_url(api, "nope"), {"text": "x"})  # 404, by the Router
    post(model_url(api, "sentiment", f"/{HASTY_APP}"), {"text": "too slow"})  # 504
    handle = serve.get_deployment_handle("mood", app_name=f"{RENAMED_APP}-mood")
    handle.fail_next_batches.remote(1).result(timeout_s=30)
    post(model_url(api, "mood", f"/{RENAMED_APP}"), {"text": "x"})  # 500
    strict = model_url(api, "sentiment", f"/{STRICT_APP}")
    with ThreadPoolExecutor(max_workers=16) as pool:  # 503s
        list(pool.map(lambda _: post(strict, {"text": "hi " * 200}), range(16)))
    wanted = {
        ("sentiment", "sentiment", ROUTE, "200"),
        ("sentiment", "sentiment", ROUTE, "422"),
        ("sentiment", "sentiment", ROUTE, "413"),
        ("models", "", ROUTE, "404"),
        (f"{HASTY_APP}-sentiment", "sentiment", ROUTE, "504"),
        (f"{RENAMED_APP}-mood", "mood", ROUTE, "500"),
        (f"{STRICT_APP}-sentiment", "sentiment", ROUTE, "503"),
    }
    counted: dict = {}
    deadline = time.monotonic() + 30  # the metrics agent exports every few seconds
    while time.monotonic() < deadline:
        counted = router_responses(cluster.metrics_text())
        if wanted <= counted.keys():
            break
        time.sleep(2)
    assert wanted <= counted.keys(), (sorted(wanted - counted.keys()), sorted(counted))
    assert ("models", "sentiment", ROUTE, "200") not in counted, "went through the Router"
    # The model's own answers carry its version, its errors included.
    by_version = router_responses_by_version(cluster.metrics_text())
    for key in wanted - {("models", "", ROUTE, "404")}:
        app, model, route, code = key
        assert (app, model, "1", route, code) in by_version, (key, sorted(by_version))
    # Each model application's server-error series exist from its start, at 0 until an error.
    for model in ("summarization", "embedding"):
        for code in ("500", "503", "504"):
            assert counted[(model, model, ROUTE, code)] == 0, (model, code, sorted(counted))
