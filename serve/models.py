"""Plain inference classes, one per task: no Ray here, so they are unit-testable on their own.

Each takes a batch of texts and returns one JSON-ready dict per text. Weights are loaded once, from
a local directory or the local Hugging Face cache (`HF_HUB_OFFLINE=1` at runtime), never per
request. The encoder tasks run on torch or, with `runtime: onnxruntime`, on the ONNX graph exported
beside the weights (serve/onnx_runtime.py); tokenizing, pooling and the answers are the same code.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import (
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from serve.config import ModelSpec, Task
from serve.onnx_runtime import OnnxEncoder, require_export
from serve.quantization import (
    AGREEMENT_TEXTS,
    MIN_COSINE,
    MIN_LABEL_AGREEMENT,
    QuantizationRejected,
    label_agreement,
    min_cosine,
    quantize_int8,
)

# A bucket holds inputs up to this factor (plus a few tokens) longer than its shortest one.
BUCKET_GROWTH = 1.5
BUCKET_SLACK_TOKENS = 8


class TextModel(Protocol):
    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...

    def probe(self) -> None:
        """Cheap liveness check (tokenizer and weights present); raises if the model is unusable."""

    def set_threads(self, threads: int) -> None:
        """The intra-op thread count of the next `predict`: fewer for big batches (replicas side by
        side), more for a lone request."""


def length_buckets(lengths: list[int]) -> list[list[int]]:
    """Indices grouped by similar length, so no input is padded far beyond its own length."""
    buckets: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        shortest = lengths[buckets[-1][0]] if buckets else -1
        if buckets and lengths[i] <= shortest * BUCKET_GROWTH + BUCKET_SLACK_TOKENS:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


class _Base:
    # Set by subclasses that support `quantize` or `runtime`: how their output is compared with
    # torch fp32's, and which output of the model their forward step returns.
    agreement: Any = None
    min_agreement = 1.0
    output = ""

    def __init__(self, spec: ModelSpec, auto_class: Any, source: str | None = None) -> None:
        self.spec = spec
        self.source = source or spec.source
        onnx_file = None
        if spec.runtime == "onnxruntime":  # before the weights load: a missing export fails fast
            onnx_file = require_export(self.source, spec.quantize)
        # A prepared directory is already the pinned revision; a hub id resolves `revision` from
        # the local cache.
        revision = None if Path(self.source).is_dir() else spec.revision
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, revision=revision)
        # A fast tokenizer keeps padding and truncation as state it sets on every call, so a
        # health probe (no padding) in another thread during a batch's encoding (padding) left
        # the batch ragged: "Unable to create tensor". One call at a time.
        self.tokenizer_lock = threading.Lock()
        self.model: Any = auto_class.from_pretrained(self.source, revision=revision)
        self.model.eval()
        self.config = self.model.config
        self.onnx: OnnxEncoder | None = None
        # The forward step of `predict`: tokenized batch in, `self.output` out.
        self._forward: Callable[[Mapping[str, Any]], torch.Tensor] = self._torch_forward
        self.quantization_agreement: float | None = None
        self.runtime_agreement: float | None = None
        if onnx_file is not None:
            self._use_onnxruntime(onnx_file)
        elif spec.quantize == "int8":
            self._quantize()

    def _torch_forward(self, encoded: Mapping[str, Any]) -> torch.Tensor:
        return getattr(self.model(**encoded), self.output)

    def _agreement_with_fp32(self, change: Callable[[], None], what: str, remove: str) -> float:
        """Apply `change` if the model answers the agreement texts as torch fp32 did before it;
        else raise, naming the config fields to remove."""
        texts = list(AGREEMENT_TEXTS)
        reference = self.predict(texts)
        change()
        score = self.agreement(reference, self.predict(texts))
        if score < self.min_agreement:
            raise QuantizationRejected(
                f"{what} {self.spec.task.value} model {self.source} agrees with fp32 at "
                f"{score:.4f} on {len(texts)} texts (minimum {self.min_agreement}); "
                f"remove {remove} from its config"
            )
        return score

    def _quantize(self) -> None:
        def quantize() -> None:
            self.model = quantize_int8(self.model)

        self.quantization_agreement = self._agreement_with_fp32(quantize, "int8", "`quantize`")

    def _use_onnxruntime(self, path: Path) -> None:
        """Swap the forward step for the ONNX graph, then drop the torch model."""

        def swap() -> None:
            encoder = self.onnx = OnnxEncoder(path, threads=torch.get_num_threads())
            self._forward = lambda encoded: torch.from_numpy(encoder.run(encoded))

        int8 = self.spec.quantize == "int8"
        what = f"ONNX Runtime {'int8' if int8 else 'fp32'}"
        remove = "`runtime` and `quantize`" if int8 else "`runtime`"
        self.runtime_agreement = self._agreement_with_fp32(swap, what, remove)
        if int8:
            self.quantization_agreement = self.runtime_agreement
        self.model = None
        gc.collect()

    def set_threads(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if self.onnx is not None:
            self.onnx.set_threads(threads)
        elif torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        with self.tokenizer_lock:
            return self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.spec.max_input_tokens,
                return_tensors="pt",
            )

    def _in_buckets(self, texts: list[str], forward: Any) -> list[dict[str, Any]]:
        """Run `forward` on length buckets of `texts` (one bucket when bucketing is off) and
        return its per-text results in the original order."""
        if not self.spec.bucket_by_length or len(texts) == 1:
            return forward(self._encode(texts))
        with self.tokenizer_lock:
            encoded = self.tokenizer(
                texts, truncation=True, max_length=self.spec.max_input_tokens, padding=False
            )
        results: list[Any] = [None] * len(texts)
        for bucket in length_buckets([len(ids) for ids in encoded["input_ids"]]):
            with self.tokenizer_lock:
                batch = self.tokenizer.pad(
                    {key: [values[i] for i in bucket] for key, values in encoded.items()},
                    return_tensors="pt",
                )
            for i, result in zip(bucket, forward(batch), strict=True):
                results[i] = result
        return results

    def probe(self) -> None:
        if self.tokenizer is None or (self.model is None and self.onnx is None):
            raise RuntimeError("model is not loaded")
        with self.tokenizer_lock:
            tokens = self.tokenizer("ok")["input_ids"]
        if not tokens:
            raise RuntimeError("tokenizer returned no tokens")


class SentimentModel(_Base):
    """Sequence classification; label names come from the model's `id2label`."""

    agreement = staticmethod(label_agreement)
    min_agreement = MIN_LABEL_AGREEMENT
    output = "logits"

    def __init__(self, spec: ModelSpec, source: str | None = None) -> None:
        super().__init__(spec, AutoModelForSequenceClassification, source)

    @property
    def labels(self) -> dict[int, str]:
        return self.config.id2label

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self._in_buckets(texts, self._classify)

    @torch.inference_mode()
    def _classify(self, encoded: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        probs = self._forward(encoded).softmax(dim=-1)
        scores, ids = probs.max(dim=-1)
        return [
            {"label": self.labels[int(i)], "score": round(float(s), 4)}
            for s, i in zip(scores, ids, strict=True)
        ]


class SummarizationModel(_Base):
    """Sequence-to-sequence generation bounded by the configured min/max length."""

    def __init__(self, spec: ModelSpec, source: str | None = None) -> None:
        super().__init__(spec, AutoModelForSeq2SeqLM, source)
        gen = spec.generation_options
        self.generate_kwargs = gen.model_dump(exclude_none=True)

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        output_ids = self.model.generate(**self._encode(texts), **self.generate_kwargs)
        summaries = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [{"summary": s.strip()} for s in summaries]


class EmbeddingModel(_Base):
    """Sentence embeddings: mean of token states over the attention mask, L2-normalized."""

    agreement = staticmethod(min_cosine)
    min_agreement = MIN_COSINE
    output = "last_hidden_state"

    def __init__(self, spec: ModelSpec, source: str | None = None) -> None:
        super().__init__(spec, AutoModel, source)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self._in_buckets(texts, self._embed)

    @torch.inference_mode()
    def _embed(self, encoded: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        states = self._forward(encoded)
        mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return [{"embedding": v.tolist(), "dim": int(v.shape[0])} for v in vectors]


MODEL_CLASSES: dict[Task, type[_Base]] = {
    Task.SENTIMENT: SentimentModel,
    Task.SUMMARIZATION: SummarizationModel,
    Task.EMBEDDING: EmbeddingModel,
}


def load_model(spec: ModelSpec, source: str | None = None) -> TextModel:
    """Load the model for `spec.task` from `source` (default: `spec.source`)."""
    return MODEL_CLASSES[spec.task](spec, source)
