"""ONNX Runtime for the encoder tasks: graphs exported when models are prepared, run by replicas.

Export traces the model, which takes seconds to minutes and needs the exporter's dependencies, so
it happens once, beside the weights, in scripts/fetch_models.py and scripts/make_test_models.py;
a replica only opens the files. `model.onnx` is the fp32 graph; `model_int8.onnx` its int8
dynamic quantization (int8 weights, activations quantized per batch at run time), per-channel
or per-tensor, whichever stays closer to fp32 on the agreement texts.

An ONNX Runtime session's intra-op thread count is fixed when it is created, so `OnnxEncoder`
keeps one session per thread count, created when first asked for.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from serve.config import Task
from serve.quantization import AGREEMENT_TEXTS

FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
# What the graph returns; pooling and softmax stay in Python, shared with the torch path.
OUTPUTS = {Task.SENTIMENT: "logits", Task.EMBEDDING: "last_hidden_state"}
ENCODER_TASKS = frozenset(OUTPUTS)
OPSET = 17
# Traced with padding, as served batches are; batch and sequence stay dynamic axes.
EXAMPLE_TEXTS = ("a short one", "a rather longer example sentence, so that the batch holds padding")
PREPARE = (
    "python scripts/fetch_models.py --config serve/serve_config.yaml --dest <model_dir>, or "
    "python scripts/make_test_models.py --out <model_dir> for stand-in models"
)


class OnnxExportMissing(FileNotFoundError):
    """A replica asked for ONNX Runtime on a model directory that was prepared without exports."""


def onnx_path(model_dir: str | Path, quantize: str | None) -> Path:
    """The graph a replica runs: int8 when `quantize: int8`, else fp32."""
    return Path(model_dir) / (INT8_FILE if quantize == "int8" else FP32_FILE)


def require_export(model_dir: str | Path, quantize: str | None) -> Path:
    path = onnx_path(model_dir, quantize)
    if not Path(model_dir).is_dir():
        raise OnnxExportMissing(
            f"runtime 'onnxruntime' needs a prepared model directory, not {model_dir!r}; "
            f"prepare it with: {PREPARE}"
        )
    if not path.is_file():
        raise OnnxExportMissing(
            f"{model_dir} has no {path.name} (runtime 'onnxruntime'); export it with: {PREPARE}"
        )
    return path


# --- export, when models are prepared ---------------------------------------------------------


class _Output(torch.nn.Module):
    """The model with positional inputs and one tensor out, as the exporter traces it."""

    def __init__(self, model: torch.nn.Module, inputs: list[str], output: str) -> None:
        super().__init__()
        self.model, self.inputs, self.output = model, inputs, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.inputs, tensors, strict=True))), self.output)


def _load_torch(model_dir: Path, task: Task) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    auto = AutoModelForSequenceClassification if task is Task.SENTIMENT else AutoModel
    # Local directories only: the preparing scripts download first, then export.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # nosec B615
    model = auto.from_pretrained(model_dir)
    return tokenizer, model.eval()


def _export_fp32(model_dir: Path, task: Task, out: Path) -> None:
    """Trace with the TorchScript exporter: deprecated since torch 2.9, but it needs no package
    beyond torch (the dynamo exporter needs onnxscript) and reproduces these encoders' fp32
    outputs to 1e-6."""
    tokenizer, model = _load_torch(model_dir, task)
    accepted = inspect.signature(model.forward).parameters
    inputs = [name for name in tokenizer.model_input_names if name in accepted]
    example = tokenizer(list(EXAMPLE_TEXTS), padding=True, return_tensors="pt")
    output = OUTPUTS[task]
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes[output] = {0: "batch"} if task is Task.SENTIMENT else {0: "batch", 1: "sequence"}
    wrapper = _Output(model, inputs, output).eval()  # a new module is in training mode
    with warnings.catch_warnings():
        # Tracing notes (shape checks frozen as constants) that hold for encoder inputs.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(example[name] for name in inputs),
            str(out),
            input_names=inputs,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


class _NoPreprocessAdvice(logging.Filter):
    """quantize_dynamic advises shape pre-processing on every call; the agreement check, not the
    advice, decides whether the int8 graph is good enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_int8(fp32: Path, out: Path, per_channel: bool) -> None:
    """int8 weights for every MatMul with constant weights (the Linear layers, as torch's dynamic
    quantization does); the embedding tables stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _NoPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            fp32,
            out,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def _worst_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """The largest relative L2 distance of one text's output from the reference's."""
    return max(
        float(np.linalg.norm(r - c) / max(float(np.linalg.norm(r)), 1e-12))
        for r, c in zip(reference, candidate, strict=True)
    )


def _per_text_outputs(path: Path, tokenizer: Any, texts: Iterable[str]) -> list[np.ndarray]:
    encoder = OnnxEncoder(path, threads=os.cpu_count() or 1)
    outputs = []
    for text in texts:
        encoded = tokenizer([text], return_tensors="np")
        outputs.append(encoder.run(encoded)[0])
    return outputs


def _export_int8(model_dir: Path, fp32: Path, out: Path) -> dict[str, float]:
    """Quantize per-channel and per-tensor and keep the one closer to fp32 on the agreement texts;
    the worst relative error of each, the kept one first."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # nosec B615
    reference = _per_text_outputs(fp32, tokenizer, AGREEMENT_TEXTS)
    candidates = {
        "per-channel": out.with_suffix(".channel"),
        "per-tensor": out.with_suffix(".tensor"),
    }
    errors = {}
    for kind, path in candidates.items():
        _quantize_int8(fp32, path, per_channel=kind == "per-channel")
        errors[kind] = _worst_error(reference, _per_text_outputs(path, tokenizer, AGREEMENT_TEXTS))
    best = min(errors, key=errors.__getitem__)
    os.replace(candidates[best], out)
    return dict(sorted(errors.items(), key=lambda item: item[0] != best))


def export_onnx(
    model_dir: str | Path, task: Task | str, force: bool = False, log: Callable[[str], None] = print
) -> list[Path]:
    """Write `model.onnx` and `model_int8.onnx` into `model_dir`; the files written.

    An existing file is kept unless `force`. Each is written under a temporary name and renamed,
    so an interrupted export leaves no file a replica would open.
    """
    model_dir, task = Path(model_dir), Task(task)
    if task not in ENCODER_TASKS:
        raise ValueError(f"ONNX export applies to {sorted(ENCODER_TASKS)}, not {task.value!r}")
    fp32, int8 = model_dir / FP32_FILE, model_dir / INT8_FILE
    if not force and fp32.is_file() and int8.is_file():
        log(f"{FP32_FILE} and {INT8_FILE} exist, kept")
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".onnx-export-") as tmp:
        if force or not fp32.is_file():
            log(f"exporting {fp32} ...")
            _export_fp32(model_dir, task, Path(tmp) / FP32_FILE)
            os.replace(Path(tmp) / FP32_FILE, fp32)
            written.append(fp32)
        if force or not int8.is_file() or fp32 in written:
            log(f"quantizing {int8} ...")
            staged = Path(tmp) / INT8_FILE
            errors = _export_int8(model_dir, fp32, staged)
            os.replace(staged, int8)
            kept, other = errors.items()
            log(
                f"{int8.name}: {kept[0]} int8 weights (worst relative error {kept[1]:.4f}; "
                f"{other[0]} {other[1]:.4f})"
            )
            written.append(int8)
    return written


# --- run, in replicas --------------------------------------------------------------------------


class OnnxEncoder:
    """One exported graph; a session per intra-op thread count, made when first asked for.

    The sessions share the file and `options()`, nothing more. Creating one takes about 0.15 s
    for DistilBERT-base, so an optimized graph is not worth passing on; and each session prepacks
    its own copy of the weights (the container that shares those is C API only), so sharing the
    initializers (`add_initializer`) keeps the originals alive beside them: measured on
    DistilBERT-base fp32, 664 MB instead of 744 MB for two sessions, 582 MB instead of 386 MB for
    one.
    """

    def __init__(self, path: str | Path, threads: int) -> None:
        self.path = Path(path)
        self._sessions: dict[int, ort.InferenceSession] = {}
        self.threads = threads
        first = self.session(threads)
        self.inputs = [i.name for i in first.get_inputs()]
        self.output = first.get_outputs()[0].name

    @staticmethod
    def options(threads: int) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the optimizer's notes are not actionable
        # A pool's threads spin after each run by default, on cores where the node's other
        # replica (or this one's next batch, on one thread) wants to run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def session(self, threads: int) -> ort.InferenceSession:
        if threads not in self._sessions:
            self._sessions[threads] = ort.InferenceSession(
                str(self.path), self.options(threads), providers=["CPUExecutionProvider"]
            )
        return self._sessions[threads]

    @property
    def sessions(self) -> dict[int, ort.InferenceSession]:
        return dict(self._sessions)

    def set_threads(self, threads: int) -> None:
        """The thread count of the next `run`; its session is made then, if it is new."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads

    def run(self, encoded: Mapping[str, Any]) -> np.ndarray:
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in self.inputs}
        return self.session(self.threads).run([self.output], feeds)[0]
