"""Validate a Serve config file before deploying it: `python -m serve.check_config FILE`.

Ray validates its own schema; this adds what only this application knows (model args, one
application per model named after it, batching in `user_config`, that `max_ongoing_requests`
leaves room for a full batch and for the replica's own admission limit, that timeouts nest
(model < Router < proxy) and that every graceful shutdown covers its longest request, and a
canary's shape), and names the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serve.config import AppArgs, ModelAppArgs, ModelUserConfig, Task, canary_app
from serve.slo_policy import SloPolicy

SLO_POLICY = "serve.slo_policy:SloPolicy"
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
    models: dict[str, tuple[str, ModelAppArgs]] = {}  # application name -> (where, args)
    routers: list[tuple[str, AppArgs, Any]] = []
    proxy_timeout = getattr(schema.http_options, "request_timeout_s", None)
    for i, app in enumerate(schema.applications):
        where = f"applications[{i}]"
        if app.import_path == APP_IMPORT_PATH:
            try:
                routers.append((where, AppArgs.model_validate(app.args), app))
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
        models[app.name] = (where, args)
        problems.extend(_check_model_app(where, app, args, proxy_timeout))
    names = {app.name for app in schema.applications}
    for where, args, app in routers:
        problems.extend(_check_router(where, app, args, models, names, proxy_timeout))
    routed = {args.model_app(name) for _, args, _ in routers for name in args.models}
    routed |= {canary_app(name) for name in routed}  # as the deployer renders a canary
    for name, (where, _) in models.items():
        if name not in routed:
            problems.append(
                f"{where}.name: no Router lists the model application {name!r}; add its model "
                "to the Router's args.models"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return schema


SERVE_GRACEFUL_SHUTDOWN_S = 20.0  # Serve's default graceful_shutdown_timeout_s


def _graceful_s(deployment: Any) -> tuple[float, str]:
    """The deployment's graceful shutdown timeout, and how to name it in a message."""
    value = getattr(deployment, "graceful_shutdown_timeout_s", None)
    if isinstance(value, int | float):
        return float(value), f"{value:g}s"
    return SERVE_GRACEFUL_SHUTDOWN_S, f"unset (Serve's default {SERVE_GRACEFUL_SHUTDOWN_S:g}s)"


def _check_model_app(where: str, app: Any, args: ModelAppArgs, proxy_timeout: Any) -> list[str]:
    problems = []
    timeout = args.timeout_s
    if isinstance(proxy_timeout, int | float) and timeout >= proxy_timeout:
        problems.append(
            f"{where}.args.spec.timeout_s: {timeout}s is not below "
            f"http_options.request_timeout_s ({proxy_timeout}s); clients would get the "
            "proxy's 408 instead of a JSON 504"
        )
    for deployment in app.deployments:
        d_where = f"{where}.deployments[{deployment.name}]"
        if deployment.name != args.model:
            problems.append(f"{d_where}.name: the application serves {args.model!r}")
            continue
        graceful, named = _graceful_s(deployment)
        if graceful < timeout:
            problems.append(
                f"{d_where}.graceful_shutdown_timeout_s: {named} is below the model's timeout "
                f"({timeout:g}s); a replica stopped in a rollout would drop the requests it holds"
            )
        problems.extend(_check_slo_policy(d_where, deployment))
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
    return problems


def _check_slo_policy(where: str, deployment: Any) -> list[str]:
    """The SLO policy's kwargs, checked here: Serve would only fail in its controller."""
    autoscaling = getattr(deployment, "autoscaling_config", None)
    policy = (autoscaling or {}).get("policy") if isinstance(autoscaling, dict) else None
    if not policy or policy.get("policy_function") != SLO_POLICY:
        return []
    try:
        SloPolicy(**(policy.get("policy_kwargs") or {}))
    except (TypeError, ValueError) as exc:
        return [f"{where}.autoscaling_config.policy.policy_kwargs: {exc}"]
    return []


def _check_router(
    where: str,
    app: Any,
    args: AppArgs,
    models: dict[str, tuple[str, ModelAppArgs]],
    names: set[str],
    proxy_timeout: Any,
) -> list[str]:
    problems = []
    missing = [args.model_app(name) for name in args.models if args.model_app(name) not in models]
    if missing:
        problems.append(
            f"{where}.args.models: no application {missing}; add one per model, named "
            f"model_app_prefix + its name, with import_path {MODEL_APP_IMPORT_PATH}"
        )
    if isinstance(proxy_timeout, int | float) and args.request_timeout_s >= proxy_timeout:
        problems.append(
            f"{where}.args.request_timeout_s: {args.request_timeout_s}s is not below "
            f"http_options.request_timeout_s ({proxy_timeout}s)"
        )
    for deployment in app.deployments:
        graceful, named = _graceful_s(deployment)
        if graceful < args.request_timeout_s:
            problems.append(
                f"{where}.deployments[{deployment.name}].graceful_shutdown_timeout_s: {named} is "
                f"below args.request_timeout_s ({args.request_timeout_s:g}s); a Router stopped in "
                "a rollout would drop the requests it holds"
            )
    for name in args.models:
        app_name = args.model_app(name)
        if app_name not in models:
            continue
        m_where, m_args = models[app_name]
        if m_args.model != name:
            problems.append(f"{m_where}.args.model: {m_args.model!r}, expected {name!r}")
        if m_args.timeout_s >= args.request_timeout_s:
            problems.append(
                f"{m_where}.args.spec.timeout_s: {m_args.timeout_s}s is not below the Router's "
                f"request_timeout_s ({args.request_timeout_s}s); the replica's own 504 must "
                "come first"
            )
        if name == args.classify_model and m_args.spec.task is not Task.SENTIMENT:
            problems.append(
                f"{where}.args.classify_model: {name!r} must be a sentiment model "
                f"(it is {m_args.spec.task.value!r})"
            )
        if m_args.spec.canary is not None and canary_app(app_name) in names:
            problems.append(
                f"{m_where}.args.spec.canary: the application {canary_app(app_name)!r} exists "
                "already; the canary's application is made by the deployer"
            )
    return problems


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
