"""What the deployer (scripts/deploy.py) deploys, and how it judges a canary: pure functions of
the Serve config file, the rollout state and Prometheus's figures, so they are tested without a
cluster.

The rollout state lives in the Router's `user_config` (`RouterUserConfig`) of the deployed
config, kept by Ray in the GCS (Redis): `canaries` holds each running canary's traffic share,
`rollouts` each finished canary's outcome, so a restarted deployer resumes where it stopped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from serve.config import (
    AppArgs,
    CanarySpec,
    ModelAppArgs,
    ModelSpec,
    RouterUserConfig,
    canary_app,
)

APP_IMPORT_PATH = "serve.app:build_app"
MODEL_APP_IMPORT_PATH = "serve.app:build_model_app"
Outcome = Literal["promoted", "rolled_back"]


@dataclass(frozen=True)
class Canary:
    """A model's declared canary, as the file states it."""

    model: str
    stable_app: str
    stable: ModelSpec
    spec: CanarySpec

    @property
    def app(self) -> str:
        return canary_app(self.stable_app)

    @property
    def stable_version(self) -> str:
        return self.stable.effective_version


def router_app(config: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in config["applications"] if a.get("import_path") == APP_IMPORT_PATH)


def model_apps(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in config["applications"] if a.get("import_path") == MODEL_APP_IMPORT_PATH]


def canaries(config: dict[str, Any]) -> dict[str, Canary]:
    """The canaries the file declares, by model name."""
    found = {}
    for app in model_apps(config):
        args = ModelAppArgs.model_validate(app["args"])
        if args.spec.canary is not None:
            found[args.model] = Canary(args.model, app["name"], args.spec, args.spec.canary)
    return found


def router_state(deployed: dict[str, Any] | None) -> RouterUserConfig:
    """The rollout state kept in a deployed Router application's config (REST API's
    `deployed_app_config`), empty when there is none."""
    for deployment in (deployed or {}).get("deployments", []):
        if deployment.get("name") == "Router":
            return RouterUserConfig.model_validate(deployment.get("user_config") or {})
    return RouterUserConfig()


def render(
    config: dict[str, Any],
    state: RouterUserConfig,
    with_canary_apps: set[str] = frozenset(),  # type: ignore[assignment]
    code_uri: str | None = None,
) -> dict[str, Any]:
    """The Serve config to deploy: the file's, with every canary block stripped from its stable
    application (so declaring one restarts nothing), a promoted canary's spec as the stable one,
    the canary applications of `with_canary_apps` (models) added beside their stable ones, and
    the Router's user_config carrying `state`. `code_uri` (a `gcs://` package of serve/) ships
    the application code with every application: the nodes' image has none."""
    out = copy.deepcopy(config)
    declared = canaries(config)
    added = []
    for app in model_apps(out):
        model = app["args"]["model"]
        spec = dict(app["args"]["spec"])
        spec.pop("canary", None)
        canary = declared.get(model)
        outcome = state.rollouts.get(model)
        promoted = outcome and outcome.outcome == "promoted"
        if canary and promoted and outcome.version == canary.spec.version:
            spec = promoted_spec(canary)
        app["args"] = {**app["args"], "spec": spec}
        if canary and model in with_canary_apps:
            added.append(canary_application(app, canary))
    out["applications"].extend(added)
    router = router_app(out)
    for deployment in router.get("deployments", []):
        if deployment.get("name") == "Router":
            deployment["user_config"] = state.model_dump(mode="json", exclude_defaults=False)
    if code_uri:
        for app in out["applications"]:
            app["runtime_env"] = {**(app.get("runtime_env") or {}), "py_modules": [code_uri]}
    return out


# What restarts a replica when it changes (Ray: the code version, or actor options); anything
# else (user_config, autoscaling, max_ongoing_requests, ...) is applied to live replicas.
RESTART_APP_FIELDS = ("import_path", "runtime_env", "args")
RESTART_DEPLOYMENT_FIELDS = (
    "ray_actor_options",
    "placement_group_bundles",
    "placement_group_strategy",
    "max_replicas_per_node",
)


def restarts(deployed: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether deploying `desired` over the application config `deployed` replaces replicas."""
    if not deployed:
        return False  # a new application: nothing runs to be kept ready
    if any(deployed.get(f) != desired.get(f) for f in RESTART_APP_FIELDS):
        return True
    before = {d["name"]: d for d in deployed.get("deployments", [])}
    return any(
        before.get(d["name"], {}).get(f) != d.get(f)
        for d in desired.get("deployments", [])
        for f in RESTART_DEPLOYMENT_FIELDS
    )


def cpus_per_replica(app: dict[str, Any]) -> float:
    options = (app.get("deployments") or [{}])[0].get("ray_actor_options") or {}
    return float(options.get("num_cpus", 1))


def pin(app: dict[str, Any], count: int, surge: bool) -> dict[str, Any]:
    """`app` held at `count` replicas (autoscaling min = max = initial), rolling with a surge or
    one replica at a time."""
    out = copy.deepcopy(app)
    for deployment in out.get("deployments", []):
        if isinstance(deployment.get("autoscaling_config"), dict):
            deployment["autoscaling_config"] = {
                **deployment["autoscaling_config"],
                "min_replicas": count,
                "max_replicas": count,
                "initial_replicas": count,
            }
        elif "num_replicas" in deployment:
            deployment["num_replicas"] = count
        deployment["max_surge_percent"] = 100 if surge else 0
    return out


def rollout_phases(
    desired: dict[str, Any],
    deployed: dict[str, dict[str, Any]],
    running: dict[str, int],
    total_cpus: float,
) -> list[dict[str, Any]]:
    """The configs that take the cluster to `desired` keeping every model a ready replica: one
    phase per model application whose replicas `desired` replaces, in turn, every model held at
    the replicas it runs; then `desired` itself (which restores autoscaling: no restart).

    Why: a surge waits for spare capacity, which an autoscaled model on a full cluster never
    gets (measured: 8 Locust users, sentiment asked for 5 replicas, 2 fit, the rollout never
    moved); Serve's rolling update counts replicas that wait for a node as running, and stopped
    both running ones (measured: 0 RUNNING for 5 s). Held, nothing waits for a node: a model
    with two or more replicas rolls one at a time while the others serve; a model with one
    surges, and the model with the most replicas gives up one for the time when the cluster
    has no room for the surge replica."""
    models = {app["name"]: app for app in model_apps(desired)}
    counts = {name: running.get(name, 0) for name in models}
    changing = [
        name for name in models if counts[name] >= 1 and restarts(deployed.get(name), models[name])
    ]
    phases = []
    for i, name in enumerate(changing):
        held = dict(counts)
        surge = held[name] == 1
        if surge:
            used = sum(held[n] * cpus_per_replica(models[n]) for n in models)
            while used + cpus_per_replica(models[name]) > total_cpus:
                largest = max(held, key=lambda n: held[n])
                if held[largest] < 2:
                    break  # no room to make: the surge waits for a node, as Serve's would
                held[largest] -= 1
                used -= cpus_per_replica(models[largest])
        phase = copy.deepcopy(desired)
        apps = []
        for app in phase["applications"]:
            if app["name"] in models and held[app["name"]] >= 1:
                pending = app["name"] in changing[i + 1 :]
                base = deployed[app["name"]] if pending else app
                app = pin(base, held[app["name"]], surge and app["name"] == name)
            apps.append(app)
        phase["applications"] = apps
        phases.append(phase)
    return [*phases, desired]


def promoted_spec(canary: Canary) -> dict[str, Any]:
    """The stable application's spec once the canary is promoted: the canary's version and
    weights, everything else as before."""
    return canary.stable.as_canary().model_dump(mode="json", exclude_none=True)


def canary_application(stable: dict[str, Any], canary: Canary) -> dict[str, Any]:
    """The canary's application: the stable one's deployments and args with the canary's spec,
    under its own name and route (`/models/<name>-canary`, for addressing it directly)."""
    app = copy.deepcopy(stable)
    app["name"] = canary.app
    app["route_prefix"] = f"{stable.get('route_prefix', '/models/' + canary.model)}-canary"
    app["args"] = {**app["args"], "spec": promoted_spec(canary)}
    return app


@dataclass(frozen=True)
class Figures:
    """One interval of Prometheus's figures for a canary and its stable version."""

    canary_requests: float
    canary_error_ratio: float | None
    stable_error_ratio: float | None
    canary_p95_ms: float | None
    stable_p95_ms: float | None


@dataclass(frozen=True)
class Verdict:
    decision: Literal["hold", "step", "rollback"]
    reason: str


def judge(spec: CanarySpec, figures: Figures) -> Verdict:
    """Whether the canary holds against stable over the last interval: `rollback` when its
    error ratio or p95 is out of the policy's bounds, `hold` when it answered too few requests
    to tell, else `step` (raise the share, or promote at 100 %)."""
    if figures.canary_requests < spec.min_requests:
        return Verdict(
            "hold",
            f"{figures.canary_requests:.0f} canary answers in the interval, below "
            f"min_requests {spec.min_requests}",
        )
    errors = figures.canary_error_ratio or 0.0
    baseline = figures.stable_error_ratio or 0.0
    if errors - baseline > spec.max_error_ratio_increase:
        return Verdict(
            "rollback",
            f"error ratio {errors:.3f} vs stable {baseline:.3f} "
            f"(allowed increase {spec.max_error_ratio_increase})",
        )
    canary_p95, stable_p95 = figures.canary_p95_ms, figures.stable_p95_ms
    if canary_p95 is not None and stable_p95 and canary_p95 > spec.max_p95_ratio * stable_p95:
        return Verdict(
            "rollback",
            f"p95 {canary_p95:.0f} ms vs stable {stable_p95:.0f} ms "
            f"(allowed ratio {spec.max_p95_ratio})",
        )
    p95 = "n/a" if canary_p95 is None else f"{canary_p95:.0f} ms"
    return Verdict(
        "step",
        f"{figures.canary_requests:.0f} answers, error ratio {errors:.3f} "
        f"(stable {baseline:.3f}), p95 {p95}",
    )


def next_share(spec: CanarySpec, share: float) -> float | None:
    """The step after `share`, None once at 100 (promote)."""
    return next((float(s) for s in spec.steps if s > share), None)


def queries(canary: Canary, window_s: float) -> dict[str, str]:
    """PromQL for `Figures` over the last `window_s`: answers and 5xx by version from
    `ray_router_responses_total`, p95 from Serve's per-application processing latency."""
    w = f"{max(int(window_s), 10)}s"
    model = canary.model

    def responses(version: str, code: str = "") -> str:
        selector = f'model="{model}",version="{version}"' + (f',code=~"{code}"' if code else "")
        return f"sum(increase(ray_router_responses_total{{{selector}}}[{w}]))"

    def ratio(version: str) -> str:
        return f"{responses(version, '5..')} / {responses(version)}"

    def p95(app: str) -> str:
        return (
            "histogram_quantile(0.95, sum by (le) (rate("
            f'ray_serve_deployment_processing_latency_ms_bucket{{application="{app}"}}[{w}])))'
        )

    return {
        "canary_requests": responses(canary.spec.version),
        "canary_error_ratio": ratio(canary.spec.version),
        "stable_error_ratio": ratio(canary.stable_version),
        "canary_p95_ms": p95(canary.app),
        "stable_p95_ms": p95(canary.stable_app),
    }


def router_args(config: dict[str, Any]) -> AppArgs:
    return AppArgs.model_validate(router_app(config)["args"])
