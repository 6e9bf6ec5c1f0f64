"""This project's Router in front of a model deployment that does no work.

Latency through `/predict` here is the serving overhead alone: proxy, router, validation, one
handle call and the JSON answer.
"""

from typing import Any

from ray import serve

from serve.config import parse_args
from serve.router import Router


@serve.deployment(ray_actor_options={"num_cpus": 0})
class NoWork:
    async def predict(self, text: str) -> dict[str, Any]:
        return {"label": "POSITIVE", "score": 1.0}


def build(args: dict[str, Any]) -> serve.Application:
    parsed = parse_args(args)
    return Router.bind(parsed, {name: NoWork.options(name=name).bind() for name in parsed.models})
