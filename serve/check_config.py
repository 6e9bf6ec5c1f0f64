"""Validate a Serve config file before deploying it: `python -m serve.check_config FILE`.

Ray validates its own schema; this adds what only this application knows (model args, one
application per model named after it, batching in `user_config`, and that `max_ongoing_requests`
leaves room for a full batch and for the replica's own admission limit), and names the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serve.config import AppArgs, ModelAppArgs, ModelUserConfig

APP_IMPORT_PATH = "serve.app:build_app"
MODEL_APP_IMPORT_PATH = "serve.app:build_model_app"


class ConfigError(ValueError):
    """A config problem, with the dotted path of the field at fault."""


def _fmt(prefix: str, exc: ValidationError) -> str:
    return "; ".join(
        f"{prefix}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
    )


def check_config(raw: dict[str, Any]) -> ServeDeploySchema:
    """Return Ray's parsed schema, or raise ConfigError naming every field at fault."""
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except Exception as exc:  # Ray's schema is pydantic v1-style; its message names the field
        raise ConfigError(f"not a valid Serve config: {exc}") from exc

    problems: list[str] = []
    served: set[str] = set()  # the applications serving a model
    routers: list[tuple[str, AppArgs]] = []
    proxy_timeout = getattr(schema.http_options, "request_timeout_s", None)
    for i, app in enumerate(schema.applications):
        where = f"applications[{i}]"
        if app.import_path == APP_IMPORT_PATH:
            try:
                routers.append((where, AppArgs.model_validate(app.args)))
            except ValidationError as exc:
                problems.append(_fmt(f"{where}.args", exc))
            continue
        if app.import_path != MODEL_APP_IMPORT_PATH:
            continue
        try:
            args = ModelAppArgs.model_validate(app.args)
        except ValidationError as exc:
            problems.append(_fmt(f"{where}.args", exc))
            continue
        if app.name != args.model_app(args.model):
            problems.append(
                f"{where}.name: {app.name!r} must be {args.model_app(args.model)!r}, "
                "model_app_prefix and the model's name (the Router finds each model's "
                "deployment in the application named so)"
            )
        served.add(app.name)
        timeout = args.models[args.model].timeout_s or args.inference_timeout_s
        if isinstance(proxy_timeout, int | float) and timeout >= proxy_timeout:
            problems.append(
                f"{where}.args.models.{args.model}.timeout_s: {timeout}s is not below "
                f"http_options.request_timeout_s ({proxy_timeout}s); clients would get the "
                "proxy's 408 instead of a JSON 504"
            )
        for deployment in app.deployments:
            d_where = f"{where}.deployments[{deployment.name}]"
            if deployment.name != args.model:
                problems.append(f"{d_where}.name: the application serves {args.model!r}")
                continue
            try:
                settings = ModelUserConfig.model_validate(deployment.user_config or {})
            except ValidationError as exc:
                problems.append(_fmt(f"{d_where}.user_config", exc))
                continue
            max_ongoing = getattr(deployment, "max_ongoing_requests", None)
            if not isinstance(max_ongoing, int):
                continue
            if max_ongoing < settings.max_batch_size:
                problems.append(
                    f"{d_where}.max_ongoing_requests: {max_ongoing} is below "
                    f"user_config.max_batch_size {settings.max_batch_size}; "
                    "batches could never fill"
                )
            if max_ongoing <= settings.max_pending_requests:
                problems.append(
                    f"{d_where}.max_ongoing_requests: {max_ongoing} must exceed "
                    f"user_config.max_pending_requests {settings.max_pending_requests}, so the "
                    "replica answers overload itself (JSON 503, counted) before Serve queues"
                )
    for where, args in routers:
        missing = sorted(args.model_app(name) for name in args.models)
        missing = [name for name in missing if name not in served]
        if missing:
            problems.append(
                f"{where}.args.models: no application {missing}; add one per model, named "
                f"model_app_prefix + its name, with import_path {MODEL_APP_IMPORT_PATH}"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return schema


def load_config(path: str | Path) -> ServeDeploySchema:
    with open(path) as f:
        return check_config(yaml.safe_load(f))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m serve.check_config SERVE_CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        schema = load_config(argv[0])
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        print(f"{argv[0]}: invalid:\n{exc}", file=sys.stderr)
        return 1
    apps = ", ".join(app.name for app in schema.applications)
    print(f"{argv[0]}: ok (applications: {apps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
