"""Prometheus sees every node, and every panel of every provisioned dashboard has data.

Grafana itself cannot run where CI runs; its dashboards are proved by evaluating each panel's PromQL
(template variables substituted) over the dashboard's own time range against the stack's real
Prometheus, as Grafana would, after real traffic and after the failures the error panels watch for:
client errors, client disconnects, a crashed and retried task, an OOM kill, a placement group.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.e2e.conftest import (
    LocustProcess,
    Stack,
    host_gateway,
    locust_totals,
    run_job,
    start_locust,
)

pytestmark = pytest.mark.e2e

DASHBOARDS = ROOT / "grafana" / "dashboards"
ALL = sorted(DASHBOARDS.glob("*/*.json"))
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
STEP_S = 15
# Sentiment admits max_ongoing_requests + max_queued_requests per replica (64 + 32) and scales to 5.
OVERLOAD_BURST = 400
# Our own dashboard is held to more: every query of every panel must show data, and a series that
# never changes over the range does not count, with two exceptions. Reference lines are
# configuration, constant by design: they must return data. A series that is flat on a healthy
# stack counts when it is flat at the value the stack reports now.
OURS = DASHBOARDS / "serving"
REFERENCE_LINES = (
    "deployment:ray_serve_max_replicas:config",
    "autoscaling_target_ongoing_requests",
    "ray_slo_p95_seconds",
)


def healthy_value(stack: Stack, expr: str) -> Callable[[dict], float] | None:
    """For a flat-when-healthy query: series labels -> the value it has on this stack now."""
    if expr.strip() == "cluster:ray_nodes:up":
        nodes = float(len(stack.nodes()))  # every node Ray knows is scraped
        return lambda _: nodes
    if "ray_slo_unmet_replicas" in expr:
        # The replicas the SLO policy wants but the cluster cannot place: none while this
        # module's traffic fits the stack (the policy's capping is unit-tested).
        return lambda _: 0.0
    if "locust_failures_per_second" in expr:
        # test_locust_run_has_no_failures_and_is_exported holds Locust's own count to 0.
        return lambda _: 0.0
    if "ray_serve_replicas:running" in expr or "autoscaling_target_replicas" in expr:
        deployments = stack.deployments()  # a steady deployment: its replicas

        def running(labels: dict) -> float:
            replicas = deployments.get(labels.get("deployment"), {}).get("replicas", [])
            return float(sum(r["state"] == "RUNNING" for r in replicas))

        return running
    return None


def query(stack: Stack, promql: str) -> dict:
    resp = requests.get(f"{stack.prometheus}/api/v1/query", params={"query": promql}, timeout=30)
    return resp.json()


def query_range(stack: Stack, promql: str, seconds: float) -> dict:
    """What Grafana asks for when the dashboard opens on `now-<seconds>` .. `now`."""
    end = time.time()
    resp = requests.get(
        f"{stack.prometheus}/api/v1/query_range",
        params={"query": promql, "start": end - seconds, "end": end, "step": STEP_S},
        timeout=30,
    )
    return resp.json()


def time_range_s(dashboard: dict) -> float:
    """Seconds in the dashboard's default range, e.g. `now-30m`."""
    match = re.fullmatch(r"now-(\d+)([smhd])", dashboard.get("time", {}).get("from", ""))
    assert match, f"{dashboard['title']}: unsupported time range {dashboard.get('time')}"
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard.get("panels", []):
        found.extend(panels(panel) if panel.get("type") == "row" else [panel])
    return found


def substitute(expr: str) -> str:
    """Grafana macros by their usual values, template variables by 'all' (.*)."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def panel_queries(dashboard: dict) -> dict[str, list[str]]:
    """'dashboard / panel' -> the panel's PromQL expressions, variables substituted."""
    found = {}
    for panel in panels(dashboard):
        exprs = [substitute(t["expr"]) for t in panel.get("targets", []) if t.get("expr")]
        if exprs:
            found[f"{dashboard['title']} / {panel.get('title')}"] = exprs
    return found


@dataclass
class LocustRun:
    process: LocustProcess
    csv_prefix: Path
    exported_users: list
    output: str | None = None

    def finish(self) -> str:
        """Wait for the run's end (once) and return its output."""
        if self.output is None:
            self.output = self.process.finish(timeout=180)
        return self.output


@pytest.fixture(scope="module")
def traffic(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocustRun]:
    """`locust -f loadtest/` headless against the stack (every model) for 100 s; the renders run
    while it still sends load (once it exits, its exporter's series go stale in Prometheus). The
    users arrive over 12 s, so the 5 s scrapes see their count rise."""
    out = tmp_path_factory.mktemp("locust")
    process = start_locust(
        stack, out / "run", "-u", "6", "-r", "0.5", "-t", "100s",
        "--exporter-port", "9646", "--exporter-host", host_gateway(stack),
    )  # fmt: skip
    exported: list = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        time.sleep(5)
        exported = exported or query(stack, 'locust_users{job="locust"} > 0')["data"]["result"]
    run = LocustRun(process, out / "run", exported)
    yield run
    if process.poll() is None:
        process.kill()
        process.wait()


def test_prometheus_scrapes_one_target_per_ray_node(stack: Stack) -> None:
    targets = stack.wait_for_ray_targets(1 + stack.workers)
    instances = {t["labels"]["instance"] for t in targets}
    assert len(instances) == 1 + stack.workers
    # Each node's container address (the head advertises its name, `ray-head`, where the stack is
    # opened to other hosts: compose.cluster.yaml).
    addresses = {
        address
        for c in stack.containers("ray-head") + stack.containers("ray-worker")
        for address in stack.addresses(c)
    }
    assert {i.rsplit(":", 1)[0] for i in instances} == addresses


def test_prometheus_scrapes_autoscaler_and_dashboard_metrics(stack: Stack) -> None:
    resp = requests.get(
        f"{stack.prometheus}/api/v1/targets", params={"state": "active"}, timeout=30
    )
    health = {t["labels"]["job"]: t["health"] for t in resp.json()["data"]["activeTargets"]}
    assert health.get("ray-autoscaler") == "up", health
    assert health.get("ray-dashboard") == "up", health
    assert health.get("prometheus") == "up", health
    assert health.get("alertmanager") == "up", health


def test_rules_loaded(stack: Stack) -> None:
    groups = requests.get(f"{stack.prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"deployment:ray_serve_requests:rate1m", "RayNodeLost", "ServeHighErrorRatio"} <= names


@pytest.fixture(scope="module")
def faults(stack: Stack, traffic: LocustRun) -> dict:
    """After the Locust run (whose every request must succeed): the failures that the error
    panels exist to show, each bounded, the API's own 503s included."""
    traffic.finish()
    for body in ({"model": "nope", "text": "x"}, {"model": "sentiment"}, {"text": 3}):
        resp = requests.post(f"{stack.api}/predict", json=body, timeout=30)
        assert 400 <= resp.status_code < 500, resp.text  # client errors: Serve's HTTP error QPS
    for _ in range(3):  # a client that gives up mid-request: cancelled in the Router and model
        with pytest.raises(requests.Timeout):
            requests.post(
                f"{stack.api}/predict",
                json={"model": "summarization", "text": "A client that hangs up. " * 20},
                timeout=0.5,
            )
    # More concurrent requests than sentiment admits: the API's 503s, for the error-ratio panel.
    with ThreadPoolExecutor(max_workers=OVERLOAD_BURST) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    requests.post(
                        f"{stack.api}/predict",
                        json={"model": "sentiment", "text": "Overloaded on purpose. " * 8},
                        timeout=120,
                    ).status_code
                ),
                range(OVERLOAD_BURST),
            )
        )
    assert 503 in statuses and set(statuses) <= {200, 503, 504}, set(statuses)
    logs = run_job(stack, "python ray_faults.py", 300)
    results = json.loads(logs.strip().splitlines()[-1])
    assert results["crash"] == "retried" and results["oom"] == "retried", results
    return results


def render_from_prometheus(stack: Stack, script: str, out: Path) -> subprocess.CompletedProcess:
    """Run grafana/<script> over the last 5 minutes of the stack's Prometheus, writing to `out`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "grafana" / script), "--minutes", "5",
         "--prometheus", stack.prometheus, "--out", str(out)],
        capture_output=True,
        text=True,
    )  # fmt: skip


def test_dashboard_renders_to_png_without_grafana(stack: Stack, traffic: LocustRun) -> None:
    out = ROOT / "build" / "serving_autoscaling.png"
    result = render_from_prometheus(stack, "render_dashboard.py", out)
    assert result.returncode == 0, result.stdout + result.stderr
    drawn = [int(line.split()[0]) for line in result.stdout.splitlines() if "series" in line]
    assert drawn and min(drawn) > 0, result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_script_writes_png_and_html_from_real_series(
    stack: Stack, traffic: LocustRun
) -> None:
    out = ROOT / "build" / "report"
    result = render_from_prometheus(stack, "report.py", out)
    assert result.returncode == 0, result.stdout + result.stderr  # 1 when a panel is empty
    drawn = {
        line.split("series")[1].strip(): int(line.split()[0])
        for line in result.stdout.splitlines()
        if " series " in line
    }
    assert len(drawn) == 6 and min(drawn.values()) > 0, drawn
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = out.with_suffix(".html").read_text()
    assert "data:image/png;base64," in page and "Running replicas" in page


def varies(result: dict) -> bool:
    """At least one series of a range query took two different values."""
    return any(len({v for _, v in series["values"]}) > 1 for series in result["data"]["result"])


def counts_as_data(stack: Stack, expr: str, result: dict, ours: bool) -> bool:
    """Whether one query's range result is data, as the panel check counts it (see OURS)."""
    if result.get("status") != "success" or not result["data"]["result"]:
        return False
    if not ours or any(ref in expr for ref in REFERENCE_LINES) or varies(result):
        return True
    healthy = healthy_value(stack, expr)
    return healthy is not None and all(
        {float(v) for _, v in series["values"]} == {healthy(series["metric"])}
        for series in result["data"]["result"]
    )


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_panel_of_every_dashboard_has_data(
    stack: Stack, traffic: LocustRun, faults: dict, path: Path
) -> None:
    """Each panel shows data over the dashboard's default time range. On Ray's dashboards a target
    that needs what a fixed-size cluster never does (e.g. failed launches of autoscaler-managed
    nodes) may stay empty when the panel's other targets have data. On ours every query of every
    panel must count as data (OURS)."""
    dashboard = json.loads(path.read_text())
    ours = path.parent == OURS
    seconds = time_range_s(dashboard)
    pending = panel_queries(dashboard)
    rejected: list[str] = []
    missing: dict[str, list[str]] = {}
    deadline = time.monotonic() + 90  # Ray exports every 10 s, Prometheus scrapes every 5 s
    while pending:
        for where, exprs in list(pending.items()):
            results = [query_range(stack, expr, seconds) for expr in exprs]
            rejected += [
                f"{where}: {expr} -> {r.get('error')}"
                for expr, r in zip(exprs, results, strict=True)
                if r.get("status") != "success"
            ]
            counted = [
                counts_as_data(stack, expr, r, ours) for expr, r in zip(exprs, results, strict=True)
            ]
            missing[where] = [expr for expr, ok in zip(exprs, counted, strict=True) if not ok]
            if all(counted) if ours else any(counted):
                del pending[where]
        assert not rejected, "queries Prometheus rejects:\n" + "\n".join(rejected)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert not pending, "panels without data (or with constant series):\n" + "\n".join(
        f"{where}: {missing.get(where)}" for where in pending
    )


def test_locust_run_has_no_failures_and_is_exported(traffic: LocustRun) -> None:
    """Reads the finished run's own CSV."""
    output = traffic.finish()
    assert traffic.exported_users, "locust_users never reached Prometheus"
    assert traffic.process.returncode == 0, output[-3000:]
    requests_sent, failures, rows = locust_totals(traffic.csv_prefix)
    assert requests_sent > 0 and failures == 0, (requests_sent, failures)
    for model in ("sentiment", "embedding", "summarization"):
        assert any(f"[{model}]" in line for line in rows), f"no {model} requests"
