"""Prometheus sees every node, and every panel of every provisioned dashboard has data.

Grafana itself cannot run where CI runs; its dashboards are proved by evaluating each panel's PromQL
(template variables substituted) against the stack's real Prometheus after real traffic.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.e2e.conftest import Stack, locust_totals, start_locust

pytestmark = pytest.mark.e2e

DASHBOARDS = ROOT / "grafana" / "dashboards"
OURS = sorted((DASHBOARDS / "serving").glob("*.json"))
RAYS = sorted((DASHBOARDS / "ray").glob("*.json"))
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def query(stack: Stack, promql: str) -> dict:
    resp = requests.get(f"{stack.prometheus}/api/v1/query", params={"query": promql}, timeout=30)
    return resp.json()


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


def panel_queries(path: Path) -> list[tuple[str, str]]:
    dashboard = json.loads(path.read_text())
    return [
        (f"{dashboard['title']} / {panel.get('title')}", substitute(target["expr"]))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


@dataclass
class LocustRun:
    process: subprocess.Popen
    csv_prefix: Path
    exported_users: list


@pytest.fixture(scope="module")
def traffic(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocustRun]:
    """`locust -f loadtest/` headless against the stack (every model) for 100 s; the checks run
    while it still sends load: once it exits, its exporter's series go stale in Prometheus."""
    out = tmp_path_factory.mktemp("locust")
    process = start_locust(
        stack, out / "run", "-u", "6", "-r", "3", "-t", "100s", "--exporter-port", "9646"
    )
    exported: list = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        time.sleep(5)
        exported = exported or query(stack, 'locust_users{job="locust"} > 0')["data"]["result"]
    run = LocustRun(process, out / "run", exported)
    yield run
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_prometheus_scrapes_one_target_per_ray_node(stack: Stack) -> None:
    targets = stack.wait_for_ray_targets(1 + stack.workers)
    instances = {t["labels"]["instance"] for t in targets}
    assert len(instances) == 1 + stack.workers
    node_ips = {n["node_ip"] for n in stack.nodes()}
    assert {i.rsplit(":", 1)[0] for i in instances} == node_ips


def test_prometheus_scrapes_autoscaler_and_dashboard_metrics(stack: Stack) -> None:
    resp = requests.get(
        f"{stack.prometheus}/api/v1/targets", params={"state": "active"}, timeout=30
    )
    health = {t["labels"]["job"]: t["health"] for t in resp.json()["data"]["activeTargets"]}
    assert health.get("ray-autoscaler") == "up", health
    assert health.get("ray-dashboard") == "up", health
    assert health.get("prometheus") == "up", health


def test_rules_loaded(stack: Stack) -> None:
    groups = requests.get(f"{stack.prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"deployment:ray_serve_requests:rate1m", "RayNodeLost", "ServeHighErrorRatio"} <= names


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_every_panel_of_our_dashboards_has_data(
    stack: Stack, traffic: LocustRun, path: Path
) -> None:
    empty = []
    for where, promql in panel_queries(path):
        result = query(stack, promql)
        if result.get("status") != "success" or not result["data"]["result"]:
            empty.append(f"{where}: {promql} -> {result.get('error') or 'no series'}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("path", RAYS, ids=lambda p: p.name)
def test_every_query_of_ray_dashboards_evaluates(
    stack: Stack, traffic: LocustRun, path: Path
) -> None:
    failed = []
    for where, promql in panel_queries(path):
        result = query(stack, promql)
        if result.get("status") != "success":
            failed.append(f"{where}: {promql} -> {result.get('error')}")
    assert not failed, "queries Prometheus rejects:\n" + "\n".join(failed)


def test_dashboard_renders_to_png_without_grafana(stack: Stack, traffic: LocustRun) -> None:
    out = ROOT / "build" / "serving_autoscaling.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "render_dashboard.py"),
            "--minutes",
            "5",
            "--prometheus",
            stack.prometheus,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    drawn = [int(line.split()[0]) for line in result.stdout.splitlines() if "series" in line]
    assert drawn and min(drawn) > 0, result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_script_writes_png_and_html_from_real_series(
    stack: Stack, traffic: LocustRun
) -> None:
    out = ROOT / "build" / "report"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report.py"),
            "--minutes",
            "5",
            "--prometheus",
            stack.prometheus,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
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


def test_locust_run_has_no_failures_and_is_exported(traffic: LocustRun) -> None:
    """Last in this module: waits for the run to end, then reads Locust's own CSV."""
    output, _ = traffic.process.communicate(timeout=180)
    assert traffic.exported_users, "locust_users never reached Prometheus"
    assert traffic.process.returncode == 0, output[-3000:]
    requests_sent, failures, rows = locust_totals(traffic.csv_prefix)
    assert requests_sent > 0 and failures == 0, (requests_sent, failures)
    for model in ("sentiment", "embedding", "summarization"):
        assert any(f"[{model}]" in line for line in rows), f"no {model} requests"
