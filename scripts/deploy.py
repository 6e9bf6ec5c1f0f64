"""Deploy the Serve config onto a running cluster, follow it until every application is RUNNING,
run the canaries it declares, and (with --watch) deploy it again whenever Serve loses its state.

The compose stack's `serve-deploy` service (long-running, with --watch); also usable by hand
against any cluster:

    python scripts/deploy.py --config serve/serve_config.yaml --address http://127.0.0.1:8265 \\
        --prometheus http://127.0.0.1:9090

A canary (a model's `spec.canary`) runs as the application `<model>-canary` beside the stable
one; the Router sends it the current step's share of the model's traffic. Every `interval_s` its
error ratio and p95 are read from Prometheus against the stable version's: within the policy,
the share moves to the next step, and past 100 % the stable application takes the canary's
version (a surge rollout) before the canary's application goes; out of it, the share goes to 0
at once and the canary is removed. The state lives in the Router's user_config (serve/rollout.py).

Exits 0 when every application runs the file's config (and every canary ended), 1 when one fails
to deploy or the timeout passes, 3 when a canary was rolled back. With --watch it keeps running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray_auth import auth_headers, request  # noqa: E402

from serve.check_config import ConfigError, check_config  # noqa: E402
from serve.config import CanaryRoute, RolloutRecord, RouterUserConfig  # noqa: E402
from serve.rollout import (  # noqa: E402
    Canary,
    Figures,
    canaries,
    judge,
    model_apps,
    next_share,
    queries,
    render,
    rollout_phases,
    router_app,
    router_state,
)

EXIT_ROLLED_BACK = 3
# Polls (--reconcile-s apart) that must find Serve without any application before the deployer
# counts its state as lost and deploys again.
LOST_POLLS = 3
# The application code the deployer ships (the nodes' image has none); the config is not code,
# so a config edit leaves the package, and the applications it does not touch, unchanged.
CODE_DIR = ROOT / "serve"
CODE_EXCLUDES = ["__pycache__", "*.yaml", "*.pyc"]


def log(message: str) -> None:
    # stderr: stdout carries the config with --render.
    print(f"[serve-deploy] {message}", file=sys.stderr, flush=True)


GRAFANA_LOGIN_COMMAND = "docker compose exec grafana cat /run/secrets/grafana_admin_password; echo"


def banner(config: str) -> None:
    """Where to go now: the last lines of a first `docker compose up`. The addresses come from
    compose (STACK_*_URL: as published on this host); none outside compose, no banner."""
    urls = {
        name: os.environ.get(f"STACK_{name}_URL", "").replace("//0.0.0.0:", "//127.0.0.1:")
        for name in ("API", "GRAFANA", "PROMETHEUS", "DASHBOARD")
    }
    if not urls["API"]:
        return
    grafana = (
        f"{urls['GRAFANA']}  (user admin, password: {GRAFANA_LOGIN_COMMAND})"
        if urls["GRAFANA"]
        else "not started on this machine (no image for it: compose.airgap.yaml)"
    )
    rule = "=" * 72
    for line in (
        rule,
        f"READY: every application RUNNING with {config}",
        f"  API            {urls['API']}  (POST /predict, GET /models)",
        f"  Grafana        {grafana}",
        f"  Prometheus     {urls['PROMETHEUS']}",
        f"  Ray dashboard  {urls['DASHBOARD']}",
        rule,
    ):
        log(line)


class Serve:
    """Serve's REST API on the Ray dashboard (what `serve deploy` and `serve status` use)."""

    def __init__(self, address: str) -> None:
        self.address = address.rstrip("/")

    def get(self, path: str) -> dict:
        # The http(s) URL of one of the stack's own services, given by the operator.
        with urllib.request.urlopen(request(f"{self.address}{path}"), timeout=10) as resp:  # nosec B310
            return json.load(resp)

    def apps(self) -> dict[str, dict]:
        return self.get("/api/serve/applications/").get("applications") or {}

    def deploy(self, config: dict[str, Any]) -> None:
        body = json.dumps(config).encode()
        headers = {**auth_headers(), "Content-Type": "application/json"}
        req = urllib.request.Request(
            f"{self.address}/api/serve/applications/", data=body, headers=headers, method="PUT"
        )
        with urllib.request.urlopen(req, timeout=60) as resp:  # nosec B310
            resp.read()

    def ship_code(self) -> str:
        """Upload serve/ as a Ray package (content-addressed: unchanged code, same URI, nothing
        restarts), the way `ray job submit` ships a working_dir; its `gcs://` URI."""
        from ray.dashboard.modules.dashboard_sdk import SubmissionClient

        client = SubmissionClient(self.address, headers=auth_headers())
        return client._upload_package_if_needed(
            str(CODE_DIR), include_gitignore=False, include_parent_dir=True, excludes=CODE_EXCLUDES
        )

    def wait_up(self, deadline: float) -> None:
        while True:
            try:
                version = self.get("/api/version")
                log(f"Ray {version.get('ray_version', '?')} dashboard is up at {self.address}")
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray dashboard at {self.address} never answered") from exc
                log(f"waiting for the Ray dashboard at {self.address} ...")
                time.sleep(3)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def value(self, expr: str) -> float | None:
        """The first sample of an instant query; None when there is none or it is NaN."""
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as resp:  # nosec B310
            result = json.load(resp)["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value


class Metrics:
    """The deployer's own series (scraped by Prometheus's `rollout` job): each canary's share
    and every decision, so the Serving dashboard shows a rollout and an alert sees a rollback."""

    def __init__(self, port: int, host: str) -> None:
        from prometheus_client import Counter, Gauge, start_http_server

        self.share = Gauge(
            "rollout_canary_share_percent",
            "Share of a model's /predict and /classify traffic its canary gets.",
            ["model", "version"],
        )
        self.decisions = Counter(
            "rollout_decisions",
            "Decisions of the canary controller: start, hold, step, promote, rollback.",
            ["model", "version", "decision"],
        )
        self.deploys = Counter(
            "rollout_deploys", "Serve configs the deployer applied, by reason.", ["reason"]
        )
        if port:
            start_http_server(port, addr=host)

    def idle(self, models: list[str]) -> None:
        """Every model's series at 0 (`version` empty: no canary), so the rollout row of the
        Serving dashboard shows each model, and a first decision has a 0 to rise from."""
        for model in models:
            self.share.labels(model, "").set(0)
            for decision in ("start", "rollback"):
                self.decisions.labels(model, "", decision)

    def started(self, canary: Canary) -> None:
        for decision in ("start", "hold", "step", "promote", "rollback"):
            self.decisions.labels(canary.model, canary.spec.version, decision)  # series at 0
        self.decide(canary, "start")

    def decide(self, canary: Canary, decision: str) -> None:
        self.decisions.labels(canary.model, canary.spec.version, decision).inc()


def summarize(apps: dict) -> str:
    parts = []
    for name, app in apps.items():
        deployments = ", ".join(
            f"{d_name}={d.get('status')}"
            + (f"({len(d.get('replicas', []))} replicas)" if d.get("replicas") is not None else "")
            for d_name, d in app.get("deployments", {}).items()
        )
        parts.append(f"{name}: {app.get('status')} [{deployments}]")
    return "; ".join(parts) or "no applications yet"


def runs_config(app: dict, expected: dict) -> bool:
    """Whether Serve's application `app` (REST API) was deployed with every field of `expected`
    (Serve adds the file's top-level settings, such as `logging_config`, to each application)."""
    from ray.serve.schema import ServeApplicationSchema

    deployed = app.get("deployed_app_config")
    if not deployed:
        return False
    current = ServeApplicationSchema.model_validate(deployed).model_dump(exclude_unset=True)
    return all(current.get(key) == value for key, value in expected.items())


class Deployer:
    def __init__(self, args: argparse.Namespace, config: dict[str, Any]) -> None:
        self.args = args
        self.config = config
        self.serve = Serve(args.address)
        self.prometheus = Prometheus(args.prometheus) if args.prometheus else None
        self.metrics = Metrics(args.metrics_port, args.metrics_host)
        self.state = RouterUserConfig()
        self.canary_apps: set[str] = set()  # models whose canary application is deployed
        self.code_uri = ""
        self.metrics.idle([a["args"]["model"] for a in model_apps(config)])

    # -- applying a config ----------------------------------------------------------------
    def desired(self) -> dict[str, Any]:
        return render(self.config, self.state, self.canary_apps, self.code_uri)

    def built_apps(self, timeout_s: float) -> dict[str, dict]:
        """Serve's applications once none is being built (an earlier deployer's apply still
        under way), or as they are after `timeout_s`. While Serve builds an application it lists
        none of its replicas: counted as none, the models would all roll at once."""
        deadline, last = time.monotonic() + timeout_s, []
        while True:
            apps = self.serve.apps()
            building = sorted(
                name
                for name, app in apps.items()
                if app.get("status") == "DEPLOYING" and not app.get("deployments")
            )
            if not building or time.monotonic() >= deadline:
                return apps
            if building != last:
                log(f"waiting for Serve to build {', '.join(building)} (an earlier apply) first")
                last = building
            time.sleep(3)

    def phases(self, desired: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
        """The configs that take the cluster to `desired` keeping every model a ready replica
        (serve/rollout.py)."""
        try:
            apps = self.built_apps(timeout_s)
            nodes = self.serve.get("/api/v0/nodes?limit=1000")["data"]["result"]["result"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return [desired]
        running = {
            name: sum(
                r.get("state") == "RUNNING"
                for d in app.get("deployments", {}).values()
                for r in d.get("replicas", [])
            )
            for name, app in apps.items()
        }
        deployed = {name: app.get("deployed_app_config") or {} for name, app in apps.items()}
        cpus = sum(
            n.get("resources_total", {}).get("CPU", 0) for n in nodes if n.get("state") == "ALIVE"
        )
        return rollout_phases(desired, deployed, running, cpus)

    def apply(self, reason: str, timeout_s: float) -> bool:
        """Deploy the desired config and follow it until every application runs it."""
        if not self.code_uri or reason.startswith("redeploy"):
            self.code_uri = self.serve.ship_code()
            log(f"application code: {CODE_DIR} shipped as {self.code_uri}")
        desired = self.desired()
        *rollouts, desired = self.phases(desired, timeout_s)
        for i, phase in enumerate(rollouts, 1):
            log(f"applying the Serve config ({reason}): rollout {i}/{len(rollouts)}, replicas held")
            self.serve.deploy(phase)
            if not self.follow(phase, timeout_s):
                # Applying the file now would roll every pending model at once, with surge
                # replicas that a full cluster has no CPU for (measured: the whole cluster
                # UPDATING, new replicas unscheduled for minutes). Held, every model keeps its
                # ready replicas; the next deploy finds what is left to roll and resumes.
                log(
                    f"rollout {i}/{len(rollouts)} did not finish; left there (every model keeps "
                    "its ready replicas, autoscaling held): the next deploy resumes it"
                )
                return False
        log(f"applying the Serve config ({reason})")
        self.serve.deploy(desired)
        self.metrics.deploys.labels(reason).inc()
        return self.follow(desired, timeout_s)

    def follow(self, desired: dict[str, Any], timeout_s: float) -> bool:
        from ray.serve.schema import ServeApplicationSchema

        expected = {
            app["name"]: ServeApplicationSchema.model_validate(app).model_dump(exclude_unset=True)
            for app in desired["applications"]
        }
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                apps = self.serve.apps()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log(f"status not available yet: {exc}")
                time.sleep(3)
                continue
            current = {n: runs_config(apps[n], cfg) for n, cfg in expected.items() if n in apps}
            # Serve deletes the applications a config no longer lists (a canary's) in the
            # background: the config is applied once they are gone too.
            leaving = sorted(set(apps) - set(expected))
            summary = (
                summarize(apps)
                + "".join(
                    f"; {name}: previous config still deployed"
                    for name, ok in current.items()
                    if not ok
                )
                + "".join(f"; {name}: being deleted" for name in leaving)
            )
            if summary != last:
                log(summary)
                last = summary
            if len(current) == len(expected) and all(current.values()) and not leaving:
                if all(apps[name].get("status") == "RUNNING" for name in expected):
                    log("all applications RUNNING with this config")
                    return True
                for name in expected:
                    if apps[name].get("status") == "DEPLOY_FAILED":
                        log(f"application {name!r} failed to deploy: {apps[name].get('message')}")
                        # Serve's reason (a constructor's traceback, no room) is the deployment's.
                        for deployment, info in (apps[name].get("deployments") or {}).items():
                            if info.get("message"):
                                log(f"  {deployment}: {info['message'][-2000:]}")
                        return False
            time.sleep(2)
        log(f"timed out; last status: {last}")
        return False

    def resume_state(self) -> None:
        """Take the rollout state from the deployed Router, if any (a restarted deployer)."""
        try:
            apps = self.serve.apps()
        except (urllib.error.URLError, OSError, ValueError):
            return
        deployed = apps.get(router_app(self.config)["name"], {}).get("deployed_app_config")
        state, declared = router_state(deployed), canaries(self.config)
        # A canary whose block was removed (or whose version changed) is dropped with its app.
        routes = {
            m: r
            for m, r in state.canaries.items()
            if m in declared and r.version == declared[m].spec.version
        }
        self.state = state.model_copy(update={"canaries": routes})
        self.canary_apps = set(routes)

    # -- canaries ---------------------------------------------------------------------------
    def set_share(self, canary: Canary, share: float | None) -> None:
        routes = dict(self.state.canaries)
        if share is None:
            routes.pop(canary.model, None)
        else:
            routes[canary.model] = CanaryRoute(version=canary.spec.version, share=share)
        self.state = self.state.model_copy(update={"canaries": routes})
        self.metrics.share.labels(canary.model, canary.spec.version).set(share or 0)

    def finish(self, canary: Canary, outcome: str) -> None:
        records = {
            **self.state.rollouts,
            canary.model: RolloutRecord(version=canary.spec.version, outcome=outcome),
        }
        self.state = self.state.model_copy(update={"rollouts": records})

    def figures(self, canary: Canary, window_s: float) -> Figures:
        if self.prometheus is None:
            raise ValueError("no --prometheus to judge a canary by")
        values = {
            key: self.prometheus.value(expr) for key, expr in queries(canary, window_s).items()
        }
        values["canary_requests"] = values["canary_requests"] or 0.0
        return Figures(**values)

    def rollback(self, canary: Canary, why: str) -> None:
        log(f"canary {canary.model} {canary.spec.version}: ROLLBACK: {why}")
        self.metrics.decide(canary, "rollback")
        self.set_share(canary, 0.0)  # no new request goes to the canary
        self.apply(f"canary {canary.model} {canary.spec.version} share 0", 120)
        log(f"canary {canary.model} {canary.spec.version}: share 0 %: stable answers everything")
        self.set_share(canary, None)
        self.canary_apps.discard(canary.model)
        self.finish(canary, "rolled_back")
        self.apply(f"canary {canary.model} {canary.spec.version} removed", 300)
        log(f"canary {canary.model} {canary.spec.version}: rolled back; stable "
            f"{canary.stable_version} untouched")  # fmt: skip

    def promote(self, canary: Canary) -> None:
        """The canary held at 100 %: its traffic goes back to stable and its application goes,
        then the stable application takes its version in a surge rollout. In that order, since
        the surge needs the CPU the canary's replicas held (measured: on a full cluster a surge
        waits for capacity that never frees)."""
        log(f"canary {canary.model} {canary.spec.version}: PROMOTE")
        self.metrics.decide(canary, "promote")
        self.set_share(canary, 0.0)
        self.apply(f"canary {canary.model} {canary.spec.version} share 0", 120)
        self.set_share(canary, None)
        self.canary_apps.discard(canary.model)
        self.apply(f"canary {canary.model} {canary.spec.version} removed", 300)
        self.finish(canary, "promoted")  # the stable application takes the canary's spec
        if not self.apply(f"stable {canary.model} takes {canary.spec.version}", 900):
            raise RuntimeError(f"the stable {canary.model} did not take {canary.spec.version}")
        log(
            f"canary {canary.model} {canary.spec.version}: promoted; write it into "
            f"{self.args.config} as the model's version (and source/revision) and remove the "
            "canary block"
        )

    def run_canary(self, canary: Canary) -> str:
        spec = canary.spec
        log(
            f"canary {canary.model} {spec.version} beside stable {canary.stable_version}: steps "
            f"{spec.steps} %, every {spec.interval_s:g} s"
        )
        self.metrics.started(canary)
        share = self.state.canaries.get(canary.model, CanaryRoute(version=spec.version, share=0))
        self.canary_apps.add(canary.model)
        self.set_share(canary, share.share)
        if not self.apply(f"canary {canary.model} {spec.version} deployed", spec.ready_timeout_s):
            self.rollback(
                canary,
                "its application is not RUNNING (it failed to deploy, or was not RUNNING "
                f"within {spec.ready_timeout_s:g} s)",
            )
            return "rolled_back"
        current = share.share or float(spec.steps[0])
        self.set_share(canary, current)
        self.apply(f"canary {canary.model} {spec.version} at {current:g} %", 120)
        self.metrics.decide(canary, "step")
        while True:
            time.sleep(spec.interval_s)
            try:
                verdict = judge(spec, self.figures(canary, spec.interval_s))
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                log(f"canary {canary.model} {spec.version}: hold: Prometheus: {exc}")
                self.metrics.decide(canary, "hold")
                continue
            if verdict.decision == "rollback":
                self.rollback(canary, verdict.reason)
                return "rolled_back"
            if verdict.decision == "hold":
                log(
                    f"canary {canary.model} {spec.version}: hold at {current:g} %: {verdict.reason}"
                )
                self.metrics.decide(canary, "hold")
                continue
            following = next_share(spec, current)
            if following is None:
                log(f"canary {canary.model} {spec.version}: held at 100 %: {verdict.reason}")
                self.promote(canary)
                return "promoted"
            log(
                f"canary {canary.model} {spec.version}: {current:g} -> {following:g} %: "
                f"{verdict.reason}"
            )
            self.metrics.decide(canary, "step")
            current = following
            self.set_share(canary, current)
            self.apply(f"canary {canary.model} {spec.version} at {current:g} %", 120)

    def run_canaries(self) -> int:
        code = 0
        for canary in canaries(self.config).values():
            record = self.state.rollouts.get(canary.model)
            if record and record.version == canary.spec.version:
                log(
                    f"canary {canary.model} {canary.spec.version} was {record.outcome}; "
                    "nothing to do (a new canary version starts a new rollout)"
                )
                continue
            if self.prometheus is None:
                log(f"canary {canary.model}: no --prometheus to judge it by; not started")
                return 1
            if self.run_canary(canary) == "rolled_back":
                code = EXIT_ROLLED_BACK
        return code

    # -- keeping Serve deployed -------------------------------------------------------------
    def watch(self) -> None:
        """Deploy again whenever Serve has had no application at all for `LOST_POLLS` polls in a
        row: its state in the GCS was lost (Redis wiped, a head started without its Redis). A
        restarted head's controller recovers its applications from the GCS within a poll or two,
        so a brief empty answer is not a loss. Anything else, including a config an operator
        applied with `serve deploy`, is left as it is. The rollout state this process holds
        (a promoted canary) goes out again with the config."""
        empty = 0
        while True:
            time.sleep(self.args.reconcile_s)
            try:
                apps = self.serve.apps()
            except (urllib.error.URLError, OSError, ValueError):
                continue  # the head is restarting
            empty = 0 if apps else empty + 1
            if empty < LOST_POLLS:
                continue
            empty = 0
            log("Serve has had no application: its state was lost (GCS/Redis); deploying again")
            self.canary_apps = set()
            self.state = self.state.model_copy(update={"canaries": {}})
            try:
                if self.apply("redeploy after Serve lost its state", self.args.timeout_s):
                    self.run_canaries()
            except (urllib.error.URLError, OSError, ValueError, RuntimeError) as exc:
                log(f"redeploy failed ({exc}); trying again at the next poll")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="serve/serve_config.yaml")
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard URL")
    parser.add_argument("--prometheus", default=os.environ.get("PROMETHEUS_URL", ""))
    parser.add_argument(
        "--timeout-s", type=float, default=float(os.environ.get("DEPLOY_TIMEOUT_S", "900"))
    )
    parser.add_argument("--watch", action="store_true", help="keep Serve deployed (compose)")
    parser.add_argument("--reconcile-s", type=float, default=5.0)
    parser.add_argument("--ready-file", help="written once every application RUNNING")
    parser.add_argument("--metrics-port", type=int, default=0, help="0: no metrics endpoint")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="inside its container")  # nosec B104
    parser.add_argument(
        "--render",
        action="store_true",
        help="ship the code and print the config as it would be deployed (for `serve deploy`)",
    )
    args = parser.parse_args(argv)
    if args.ready_file:
        Path(args.ready_file).unlink(missing_ok=True)

    log(f"checking {args.config}")
    try:
        config = yaml.safe_load(Path(args.config).read_text())
        check_config(config)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        log(f"{args.config}: invalid:\n{exc}")
        return 1
    if args.render:
        args.metrics_port = 0
    deployer = Deployer(args, config)
    deployer.serve.wait_up(time.monotonic() + args.timeout_s)
    deployer.resume_state()
    if args.render:
        deployer.code_uri = deployer.serve.ship_code()
        print(yaml.safe_dump(deployer.desired(), sort_keys=False), end="")
        return 0
    if not deployer.apply(f"serve deploy {args.config}", args.timeout_s):
        return 1
    if args.ready_file:
        Path(args.ready_file).write_text(f"{time.time()}\n")
    banner(args.config)
    code = deployer.run_canaries()
    if args.watch:
        deployer.watch()
    return code


if __name__ == "__main__":
    sys.exit(main())
