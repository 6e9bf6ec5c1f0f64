"""The plain model classes on tiny models, without Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from serve.config import ModelSpec
from serve.models import length_buckets, load_model
from serve.quantization import QuantizationRejected

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


def test_length_buckets_group_similar_lengths() -> None:
    lengths = [30, 5, 200, 6, 31, 190]
    buckets = length_buckets(lengths)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[5, 6], [30, 31], [190, 200]]


@pytest.mark.parametrize("task", ["sentiment", "embedding"])
def test_bucketing_changes_no_result(tiny_models: Path, task: str) -> None:
    texts = ["short", "word " * 120, "a middling sentence of a few words", "tiny", "word " * 90]
    results = {
        bucketed: load_model(
            ModelSpec(task=task, source=str(tiny_models / task), bucket_by_length=bucketed)
        ).predict(texts)
        for bucketed in (True, False)
    }
    for with_buckets, without in zip(results[True], results[False], strict=True):
        if task == "sentiment":
            assert with_buckets["label"] == without["label"]
            assert math.isclose(with_buckets["score"], without["score"], abs_tol=1e-3)
        else:
            assert (
                max(
                    abs(a - b)
                    for a, b in zip(with_buckets["embedding"], without["embedding"], strict=True)
                )
                < 1e-4
            )


def test_int8_sentiment_accepted_when_labels_agree(tiny_models: Path) -> None:
    spec = ModelSpec(task="sentiment", source=str(tiny_models / "sentiment"), quantize="int8")
    model = load_model(spec)
    assert model.quantization_agreement >= 0.99
    linear = [m for m in model.model.modules() if type(m) is torch.nn.Linear]
    assert not linear, "Linear layers left in fp32"
    assert model.predict(TEXTS)[0]["label"] in {"POSITIVE", "NEGATIVE"}


def test_int8_minilm_refused_by_the_cosine_check(tiny_models: Path) -> None:
    """The real MiniLM weights: torch's x86 int8 kernels move some embeddings below a cosine of
    0.99 to fp32, so the replica refuses to start rather than serve them."""
    spec = ModelSpec(task="embedding", source=str(tiny_models / "embedding"), quantize="int8")
    refused = r"agrees with fp32 at 0\.9[0-8]\d+ on 144 texts \(minimum 0\.99\)"
    with pytest.raises(QuantizationRejected, match=refused):
        load_model(spec)
