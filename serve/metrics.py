"""Application metrics, exported by every node's metrics agent (port 8080) as `ray_model_*`.

Serve adds the `deployment`, `replica` and `application` tags itself; `model` is the model's name.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

LATENCY_MS_BOUNDARIES = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
INPUT_CHARS_BOUNDARIES = [16, 64, 256, 1024, 4096, 16384]


class ModelMetrics:
    """The four series a model replica reports; one instance per replica."""

    def __init__(self, model: str) -> None:
        self.inference_latency_ms = Histogram(
            "model_inference_latency_ms",
            description="Wall time of one batched forward pass (or generate call), in ms.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model",),
        )
        self.batch_size = Histogram(
            "model_batch_size",
            description="Number of requests served together in one batch.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=("model",),
        )
        self.input_chars = Histogram(
            "model_input_chars",
            description="Length of each input text, in characters.",
            boundaries=INPUT_CHARS_BOUNDARIES,
            tag_keys=("model",),
        )
        self.errors = Counter(
            "model_errors",
            description="Failed batches, by exception type.",
            tag_keys=("model", "error_type"),
        )
        for metric in (self.inference_latency_ms, self.batch_size, self.input_chars, self.errors):
            metric.set_default_tags({"model": model})  # Serve adds its own tags to the dict

    def record_batch(self, texts: list[str], latency_ms: float) -> None:
        self.batch_size.observe(len(texts))
        self.inference_latency_ms.observe(latency_ms)
        for text in texts:
            self.input_chars.observe(len(text))

    def record_error(self, error: BaseException) -> None:
        self.errors.inc(tags={"error_type": type(error).__name__})
