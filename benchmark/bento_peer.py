"""The framework peer: BentoML with adaptive batching, the same model through a pipeline.

Runs in its own virtualenv (benchmark/requirements-bentoml.lock): `bentoml serve
bento_peer:Sentiment`.
"""

import os

import bentoml
from transformers import pipeline


@bentoml.service(traffic={"max_concurrency": 512, "timeout": 120})
class Sentiment:
    def __init__(self) -> None:
        self.model = pipeline("sentiment-analysis", model=os.environ["BENCH_SENTIMENT_MODEL"])

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=2000)
    def predict(self, texts: list[str]) -> list[dict]:
        results = self.model(texts, batch_size=len(texts))
        return [{"label": r["label"], "score": round(r["score"], 4)} for r in results]
