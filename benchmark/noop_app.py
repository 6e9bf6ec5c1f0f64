"""This project's model application with a deployment that does no work.

Latency on `/models/<name>/predict` here is the serving overhead of a model's own route (ingress,
validation, the JSON answer); through `/predict`, the Router's hop and one handle call on top.
The model is loaded as usual, only `predict` is replaced.
"""

from typing import Any

from ray import serve

from serve.config import parse_model_args
from serve.deployments import ModelServer


@serve.deployment(ray_actor_options={"num_cpus": 0})
class NoWork(ModelServer.func_or_class):
    async def predict(self, text: str) -> dict[str, Any]:
        # With the version, as ModelServer.predict answers: its own route takes it back out.
        return {"label": "POSITIVE", "score": 1.0, "version": self.version}


def build(args: dict[str, Any]) -> serve.Application:
    parsed = parse_model_args(args)
    spec = parsed.spec.model_copy(update={"timeout_s": parsed.timeout_s})
    return NoWork.options(name=parsed.model).bind(parsed.model, spec, parsed)
