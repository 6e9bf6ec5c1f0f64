"""`runtime: onnxruntime` on the tiny models: export, load, agreement with torch, threads."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
import torch

from serve.config import ModelSpec
from serve.models import load_model
from serve.onnx_runtime import FP32_FILE, INT8_FILE, OnnxExportMissing, export_onnx
from serve.quantization import QuantizationRejected

TEXTS = ["Ray Serve is great", "A much longer input about markets, cats and mats.", "x"]
MIXED = ["short", "word " * 120, "a middling sentence of a few words", "tiny", "word " * 90]


def onnx_spec(tiny_models: Path, task: str, **extra: Any) -> ModelSpec:
    return ModelSpec(task=task, source=str(tiny_models / task), runtime="onnxruntime", **extra)


@pytest.fixture(scope="module")
def torch_models(tiny_models: Path) -> dict[str, Any]:
    return {
        task: load_model(ModelSpec(task=task, source=str(tiny_models / task)))
        for task in ("sentiment", "embedding")
    }


@pytest.fixture(scope="module")
def onnx_models(tiny_models: Path) -> dict[str, Any]:
    return {task: load_model(onnx_spec(tiny_models, task)) for task in ("sentiment", "embedding")}


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("task", "output"), [("sentiment", "logits"), ("embedding", "last_hidden_state")]
)
@pytest.mark.parametrize("file", [FP32_FILE, INT8_FILE])
def test_prepared_models_carry_graphs_with_dynamic_batch_and_length(
    tiny_models: Path, task: str, output: str, file: str
) -> None:
    session = ort.InferenceSession(tiny_models / task / file, providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", "sequence"]] * len(
        session.get_inputs()
    )
    assert [o.name for o in session.get_outputs()] == [output]
    assert session.get_outputs()[0].shape[0] == "batch"
    ops = {node.op_type for node in onnx.load(str(tiny_models / task / file)).graph.node}
    assert ("DynamicQuantizeLinear" in ops) == (file == INT8_FILE)


def test_export_keeps_existing_files_unless_forced(tiny_models: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "sentiment"
    shutil.copytree(tiny_models / "sentiment", model_dir)
    (model_dir / INT8_FILE).unlink()
    fp32_before = (model_dir / FP32_FILE).stat().st_mtime_ns
    messages: list[str] = []

    assert export_onnx(model_dir, "sentiment", log=messages.append) == [model_dir / INT8_FILE]
    assert (model_dir / FP32_FILE).stat().st_mtime_ns == fp32_before
    assert any("int8 weights (worst relative error" in m for m in messages)
    assert export_onnx(model_dir, "sentiment", log=messages.append) == []
    assert messages[-1] == f"{FP32_FILE} and {INT8_FILE} exist, kept"
    forced = export_onnx(model_dir, "sentiment", force=True, log=messages.append)
    assert forced == [model_dir / FP32_FILE, model_dir / INT8_FILE]
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(ValueError, match="not 'summarization'"):
        export_onnx(tiny_models / "summarization", "summarization")


def test_sentiment_matches_torch_fp32(torch_models: dict, onnx_models: dict) -> None:
    model = onnx_models["sentiment"]
    assert model.runtime_agreement == 1.0
    assert model.quantization_agreement is None
    assert model.model is None and model.onnx is not None  # only tokenizer + session kept
    expected = torch_models["sentiment"].predict(TEXTS)
    got = model.predict(TEXTS)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for r, e in zip(got, expected, strict=True):
        assert set(r) == {"label", "score"} and r["score"] == round(r["score"], 4)
        assert math.isclose(r["score"], e["score"], abs_tol=1e-4)


def test_embedding_matches_torch_fp32(torch_models: dict, onnx_models: dict) -> None:
    model = onnx_models["embedding"]
    assert model.runtime_agreement >= 0.9999
    expected = torch_models["embedding"].predict(TEXTS)
    got = model.predict(TEXTS)
    for r, e in zip(got, expected, strict=True):
        assert set(r) == {"embedding", "dim"} and r["dim"] == 384 == len(r["embedding"])
        assert isinstance(r["embedding"][0], float)
        assert max_abs_diff(r["embedding"], e["embedding"]) < 1e-4


def test_int8_sentiment_accepted(tiny_models: Path, torch_models: dict) -> None:
    model = load_model(onnx_spec(tiny_models, "sentiment", quantize="int8"))
    assert model.onnx.path.name == INT8_FILE
    assert model.quantization_agreement == model.runtime_agreement >= 0.99
    assert [r["label"] for r in model.predict(TEXTS)] == [
        r["label"] for r in torch_models["sentiment"].predict(TEXTS)
    ]


def test_int8_minilm_refused_by_the_cosine_check(tiny_models: Path) -> None:
    """The real MiniLM: like torch's int8, ONNX Runtime's moves some embeddings below 0.99."""
    refused = (
        r"ONNX Runtime int8 embedding model .* agrees with fp32 at 0\.9[0-8]\d+ on 144 texts "
        r"\(minimum 0\.99\); remove `runtime` and `quantize` from its config"
    )
    with pytest.raises(QuantizationRejected, match=refused):
        load_model(onnx_spec(tiny_models, "embedding", quantize="int8"))


def test_missing_export_names_the_directory_and_the_command(
    tiny_models: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "sentiment"
    shutil.copytree(tiny_models / "sentiment", model_dir)
    (model_dir / INT8_FILE).unlink()
    spec = ModelSpec(task="sentiment", source=str(model_dir), runtime="onnxruntime")
    load_model(spec)  # fp32 is there
    with pytest.raises(OnnxExportMissing, match=rf"{model_dir} has no {INT8_FILE}.*fetch_models"):
        load_model(spec.model_copy(update={"quantize": "int8"}))
    hub_id = spec.model_copy(update={"source": "acme/not-prepared"})
    with pytest.raises(OnnxExportMissing, match="needs a prepared model directory"):
        load_model(hub_id)


def test_set_threads_keeps_one_session_per_count(onnx_models: dict) -> None:
    model = onnx_models["sentiment"]
    expected = model.predict(TEXTS)
    model.set_threads(1)
    assert model.predict(TEXTS) == expected
    one = model.onnx.session(1)
    model.set_threads(2)
    assert model.predict(TEXTS) == expected
    assert {1, 2} <= set(model.onnx.sessions)
    assert model.onnx.session(1) is one and model.onnx.session(2) is not one
    assert model.onnx.session(2).get_session_options().intra_op_num_threads == 2
    assert one.get_session_options().inter_op_num_threads == 1
    model.set_threads(1)
    assert model.onnx.threads == 1 and model.onnx.session(1) is one
    with pytest.raises(ValueError, match="at least 1"):
        model.set_threads(0)


def test_set_threads_on_torch_sets_torch_threads(torch_models: dict) -> None:
    before = torch.get_num_threads()
    try:
        torch_models["sentiment"].set_threads(1)
        assert torch.get_num_threads() == 1
        torch_models["embedding"].set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("task", ["sentiment", "embedding"])
def test_bucketing_changes_no_result(tiny_models: Path, onnx_models: dict, task: str) -> None:
    bucketed = load_model(onnx_spec(tiny_models, task, bucket_by_length=True))
    for with_buckets, without in zip(
        bucketed.predict(MIXED), onnx_models[task].predict(MIXED), strict=True
    ):
        if task == "sentiment":
            assert with_buckets["label"] == without["label"]
            assert math.isclose(with_buckets["score"], without["score"], abs_tol=1e-3)
        else:
            assert max_abs_diff(with_buckets["embedding"], without["embedding"]) < 1e-4


def test_batch_padding_changes_no_embedding(onnx_models: dict) -> None:
    """The graph honours the attention mask: an input alone equals it padded in a batch."""
    batched = onnx_models["embedding"].predict(MIXED)
    for text, result in zip(MIXED, batched, strict=True):
        alone = onnx_models["embedding"].predict([text])[0]
        assert max_abs_diff(alone["embedding"], result["embedding"]) < 1e-4


def test_probe(tiny_models: Path, onnx_models: dict) -> None:
    onnx_models["embedding"].probe()
    broken = load_model(onnx_spec(tiny_models, "sentiment"))
    broken.onnx = None
    with pytest.raises(RuntimeError, match="not loaded"):
        broken.probe()
