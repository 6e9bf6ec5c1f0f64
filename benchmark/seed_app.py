"""The seed article's deployment, as written there: two replicas, one request per forward pass.

The anchor the benchmark compares against. Only the model path differs (an env var, so the same
weights serve every peer); the article's `serve.run` at import time is left out.
"""

import os

from ray import serve
from transformers import pipeline


@serve.deployment(
    num_replicas=2,
    ray_actor_options={"num_cpus": 1},
)
class TextClassifier:
    def __init__(self):
        self.model = pipeline("sentiment-analysis", model=os.environ["BENCH_SENTIMENT_MODEL"])

    async def __call__(self, request):
        data = await request.json()
        result = self.model(data["text"])
        return {"label": result[0]["label"], "score": round(result[0]["score"], 4)}


app = TextClassifier.bind()
