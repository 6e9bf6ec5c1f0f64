"""Application builder: `import_path: serve.app:build_app` in the Serve config.

Nothing runs at import time, so `serve run`, `serve deploy` and `serve build` all work.
"""

# No `from __future__ import annotations`: Serve reads the real `AppArgs` annotation to validate
# the config's `args` before calling the builder.
from ray.serve import Application

from serve.config import AppArgs, parse_args
from serve.deployments import DEPLOYMENTS
from serve.router import Router


def build_app(args: AppArgs) -> Application:
    """One deployment per configured model, named after it, behind the Router. Each model gets
    its effective timeout, from which its replicas judge a batch hung."""
    args = parse_args(args)
    models = {
        name: DEPLOYMENTS[spec.task]
        .options(name=name)
        .bind(
            name,
            spec.model_copy(update={"timeout_s": spec.timeout_s or args.inference_timeout_s}),
            args.model_dir,
        )
        for name, spec in args.models.items()
    }
    return Router.bind(args, models)
