"""Locust users for the API: one per model, realistic short and long texts.

    locust                                       # web UI on http://127.0.0.1:8089 (locust.conf)
    locust -f loadtest/ --headless -u 20 -r 2 -t 5m --csv build/run --html build/run.html

Without `--host` (or LOCUST_HOST) the users load http://127.0.0.1:<API_PORT> (api_target.py).
Task weights come from environment variables (`LOCUST_WEIGHT_SENTIMENT`, `..._SUMMARIZATION`,
`..._EMBEDDING`); a weight of 0 leaves that model out.
"""

from __future__ import annotations

import os
import random

from api_target import default_host  # locust -f loadtest/ puts this folder on sys.path
from locust import FastHttpUser, between, task

SHORT_TEXTS = [
    "Ray Serve is great",
    "The new release fixed every bug I reported.",
    "Support never answered my ticket.",
    "A cat sits on the mat",
    "Latency doubled after the last deployment.",
]
LONG_TEXTS = [
    (
        "Ray Serve is a scalable model serving library for building online inference APIs. "
        "It is framework-agnostic, so one toolkit serves deep learning models built with "
        "PyTorch, TensorFlow or Keras as well as plain Python business logic. Replicas scale "
        "with traffic, requests are batched, and each model scales on its own."
    ),
    (
        "The quarterly report showed revenue growth in every region, driven by subscriptions "
        "and a strong holiday season. Costs rose less than expected, margins improved, and the "
        "company raised its forecast for the rest of the year while warning about supply risks."
    ),
]


def weight(model: str, default: int) -> int:
    return int(os.environ.get(f"LOCUST_WEIGHT_{model.upper()}", default))


class ApiUser(FastHttpUser):
    """Shared request logic: POST /predict and fail on anything but a well-formed 200."""

    abstract = True
    host = default_host()  # Locust's fallback when neither --host nor LOCUST_HOST is given
    wait_time = between(0.1, 0.5)
    # Above the API's own timeouts (75 s for summarization, proxy 90 s), so a slow answer is
    # reported as the server's 504 rather than a client-side disconnect.
    network_timeout = 120.0
    connection_timeout = 10.0
    model = ""

    def predict(self, text: str, expect: str) -> None:
        body = {"model": self.model, "text": text}
        with self.client.post(
            "/predict", json=body, name=f"/predict [{self.model}]", catch_response=True
        ) as resp:
            text = (resp.text or "")[:200]
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {text or getattr(resp, 'error', '')}")
            elif expect not in (resp.json() or {}):
                resp.failure(f"no {expect!r} in {text}")


class SentimentUser(ApiUser):
    weight = weight("sentiment", 6)
    model = "sentiment"

    @task(3)
    def short_text(self) -> None:
        self.predict(random.choice(SHORT_TEXTS), "label")

    @task(1)
    def long_text(self) -> None:
        self.predict(random.choice(LONG_TEXTS), "label")


class EmbeddingUser(ApiUser):
    weight = weight("embedding", 3)
    model = "embedding"

    @task
    def embed(self) -> None:
        self.predict(random.choice(SHORT_TEXTS + LONG_TEXTS), "embedding")


class SummarizationUser(ApiUser):
    weight = weight("summarization", 1)
    model = "summarization"
    wait_time = between(1, 3)  # generation takes seconds; fewer, slower users

    @task
    def summarize(self) -> None:
        self.predict(random.choice(LONG_TEXTS), "summary")
