"""Plain inference classes, one per task: no Ray here, so they are unit-testable on their own.

Each takes a batch of texts and returns one JSON-ready dict per text. Weights are loaded once, from
a local directory or the local Hugging Face cache (`HF_HUB_OFFLINE=1` at runtime), never per
request.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from transformers import (
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from serve.config import ModelSpec, Task


class TextModel(Protocol):
    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...

    def probe(self) -> None:
        """Cheap liveness check (tokenizer and weights present); raises if the model is unusable."""


class _Base:
    def __init__(self, spec: ModelSpec, auto_class: Any, source: str | None = None) -> None:
        self.spec = spec
        self.source = source or spec.source
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = auto_class.from_pretrained(self.source)
        self.model.eval()

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.spec.max_input_tokens,
            return_tensors="pt",
        )

    def probe(self) -> None:
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("model is not loaded")
        if not self.tokenizer("ok")["input_ids"]:
            raise RuntimeError("tokenizer returned no tokens")


class SentimentModel(_Base):
    """Sequence classification; label names come from the model's `id2label`."""

    def __init__(self, spec: ModelSpec, source: str | None = None) -> None:
        super().__init__(spec, AutoModelForSequenceClassification, source)
        self.labels = self.model.config.id2label

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        probs = self.model(**self._encode(texts)).logits.softmax(dim=-1)
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

    def __init__(self, spec: ModelSpec, source: str | None = None) -> None:
        super().__init__(spec, AutoModel, source)

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        encoded = self._encode(texts)
        states = self.model(**encoded).last_hidden_state
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
