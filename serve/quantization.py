"""Opt-in int8 dynamic quantization, accepted only when it agrees with fp32.

Dynamic quantization of the Linear layers roughly doubles CPU throughput for encoder models, but
how much it changes outputs depends on the weights. So a replica that is asked to quantize first
runs a fixed text set through fp32 and int8 and refuses to start when they disagree: at least 99%
identical labels for classification, a cosine of at least 0.99 for every embedding.
"""

from __future__ import annotations

import torch

MIN_LABEL_AGREEMENT = 0.99
MIN_COSINE = 0.99

# Varied in length, topic and tone: the fixed set both precisions are compared on.
AGREEMENT_TEXTS: tuple[str, ...] = tuple(
    f"{opening} {subject} {verdict}"
    for opening in (
        "Honestly,",
        "After a long week of testing,",
        "According to the quarterly report,",
        "My friends told me that",
        "I did not expect that",
        "In the end",
        "To be fair,",
        "Surprisingly,",
    )
    for subject in (
        "the new phone",
        "this restaurant's service",
        "the film's second half",
        "our deployment pipeline",
        "the hotel room",
        "the customer support team",
    )
    for verdict in (
        "was wonderful and I would recommend it to anyone.",
        "was a complete waste of time and money.",
        "was fine, nothing special.",
    )
)


class QuantizationRejected(RuntimeError):
    """The int8 model disagrees with fp32 beyond the threshold: keep fp32 (remove `quantize`)."""


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights (a scale per output channel: closer to fp32 than one per tensor at the same
    speed), activations quantized per batch at run time, for every Linear layer."""
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return torch.ao.quantization.quantize_dynamic(
        model, {torch.nn.Linear: qconfig}, dtype=torch.qint8
    )


def label_agreement(reference: list[dict], candidate: list[dict]) -> float:
    same = sum(r["label"] == c["label"] for r, c in zip(reference, candidate, strict=True))
    return same / len(reference)


def min_cosine(reference: list[dict], candidate: list[dict]) -> float:
    """Embeddings are L2-normalized, so the dot product is the cosine."""
    return min(
        float(torch.dot(torch.tensor(r["embedding"]), torch.tensor(c["embedding"])))
        for r, c in zip(reference, candidate, strict=True)
    )
