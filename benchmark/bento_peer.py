"""The framework peer: BentoML with adaptive batching, the same model through a pipeline.

Runs in its own virtualenv (benchmark/requirements-bentoml.lock): `bentoml serve
bento_peer:Sentiment`. With BENCH_RUNTIME=onnxruntime it runs the same ONNX Runtime int8 graph
as b does (this project's model code, on every core), so that comparison is like for like too.
"""

import os

import bentoml


def load() -> object:
    path = os.environ["BENCH_SENTIMENT_MODEL"]
    if os.environ.get("BENCH_RUNTIME") == "onnxruntime":
        from serve.config import ModelSpec
        from serve.models import load_model

        model = load_model(
            ModelSpec(task="sentiment", source=path, runtime="onnxruntime", quantize="int8")
        )
        model.set_threads(os.cpu_count() or 1)
        return model.predict
    from transformers import pipeline

    classify = pipeline("sentiment-analysis", model=path)

    def predict(texts: list[str]) -> list[dict]:
        results = classify(texts, batch_size=len(texts))
        return [{"label": r["label"], "score": round(r["score"], 4)} for r in results]

    return predict


@bentoml.service(traffic={"max_concurrency": 512, "timeout": 120})
class Sentiment:
    def __init__(self) -> None:
        self.predict_batch = load()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=2000)
    def predict(self, texts: list[str]) -> list[dict]:
        return self.predict_batch(texts)
