"""The plain model classes on tiny models, without Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from serve.config import ModelSpec
from serve.models import load_model

TEXTS = ["Ray Serve is great", "A much longer input about markets, cats and mats.", "x"]


@pytest.fixture(scope="module")
def models(tiny_models: Path) -> dict:
    return {
        task: load_model(ModelSpec(task=task, source=str(tiny_models / task)))
        for task in ("sentiment", "summarization", "embedding")
    }


def test_sentiment_one_result_per_text(models: dict) -> None:
    results = models["sentiment"].predict(TEXTS)
    assert len(results) == len(TEXTS)
    for r in results:
        assert r["label"] in {"POSITIVE", "NEGATIVE"}
        assert 0.5 <= r["score"] <= 1.0


def test_summarization_respects_max_length(tiny_models: Path) -> None:
    spec = ModelSpec(
        task="summarization",
        source=str(tiny_models / "summarization"),
        generation={"max_length": 12, "min_length": 4},
    )
    model = load_model(spec)
    results = model.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for r in results:
        assert isinstance(r["summary"], str)
        assert len(model.tokenizer(r["summary"])["input_ids"]) <= 12 + 2


def test_embedding_normalized_384(models: dict) -> None:
    results = models["embedding"].predict(TEXTS)
    for r in results:
        assert r["dim"] == 384 == len(r["embedding"])
        assert math.isclose(math.fsum(x * x for x in r["embedding"]), 1.0, rel_tol=1e-4)


def test_embedding_same_alone_or_batched(models: dict) -> None:
    batched = models["embedding"].predict(TEXTS)[0]["embedding"]
    alone = models["embedding"].predict(TEXTS[:1])[0]["embedding"]
    assert max(abs(a - b) for a, b in zip(batched, alone, strict=True)) < 1e-4


def test_long_input_is_truncated_not_rejected(models: dict) -> None:
    assert len(models["sentiment"].predict(["word " * 5000])) == 1


def test_probe_detects_unloaded_model(models: dict, tiny_models: Path) -> None:
    models["embedding"].probe()
    broken = load_model(ModelSpec(task="sentiment", source=str(tiny_models / "sentiment")))
    broken.model = None
    with pytest.raises(RuntimeError, match="not loaded"):
        broken.probe()
