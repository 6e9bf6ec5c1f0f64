"""Application builders, named by `import_path` in the Serve config:

- `serve.app:build_app`: the Router at `/` (`/predict`, `/classify`, `GET /models`), which reaches
  each model's deployment by handle;
- `serve.app:build_model_app`: one application per model at `/models/<name>`, whose deployment is
  its own HTTP ingress, so `POST /models/<name>/predict` goes from Serve's ingress straight to
  that model's replicas, without the Router hop.

Nothing runs at import time, so `serve run`, `serve deploy` and `serve build` all work.
"""

# No `from __future__ import annotations`: Serve reads the real `AppArgs` annotation to validate
# the config's `args` before calling the builder.
from ray.serve import Application

from serve.config import AppArgs, ModelAppArgs, parse_args, parse_model_args
from serve.deployments import ModelServer
from serve.router import Router


def build_app(args: AppArgs) -> Application:
    """The Router alone; the models are applications of their own, named after the model."""
    return Router.bind(parse_args(args))


def build_model_app(args: ModelAppArgs) -> Application:
    """One model's deployment, named after it, with its effective timeout, from which its
    replicas answer 504 and judge a batch hung."""
    args = parse_model_args(args)
    spec = args.spec.model_copy(update={"timeout_s": args.timeout_s, "canary": None})
    return ModelServer.options(name=args.model).bind(args.model, spec, args)
