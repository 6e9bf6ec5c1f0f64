"""Prometheus sees every node, and every panel of every provisioned dashboard has data.

Grafana itself cannot run where CI runs; its dashboards are proved by evaluating each panel's PromQL
(template variables substituted) against the stack's real Prometheus after real traffic.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.e2e.conftest import Stack

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


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> None:
    """Most of a minute of traffic to every model, and some client errors, before the checks."""
    # Generation with the full-size summarizer takes seconds per batch on two cores: keep it rare.
    bodies = [
        {"model": "sentiment", "text": "Ray Serve is great"},
        {"model": "embedding", "text": "A cat sits on the mat"},
        {"model": "sentiment", "text": "The queue grew and the replicas followed."},
        {"model": "unknown", "text": "x"},
        {"model": "embedding", "text": "A kitten is sitting on a rug"},
        {"model": "sentiment", "text": "Latency stayed low."},
        {"model": "embedding", "text": "Stock markets fell sharply today"},
        {"model": "summarization", "text": "Ray Serve scales model serving with traffic. " * 4},
    ]

    def send(i: int) -> int:
        body = bodies[i % len(bodies)]
        return requests.post(f"{stack.api}/predict", json=body, timeout=120).status_code

    deadline = time.monotonic() + 45
    with ThreadPoolExecutor(max_workers=4) as pool:
        while time.monotonic() < deadline:
            statuses = list(pool.map(send, range(8)))
            assert set(statuses) <= {200, 404}, statuses
    time.sleep(12)  # two scrape intervals plus a rule evaluation


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
def test_every_panel_of_our_dashboards_has_data(stack: Stack, traffic: None, path: Path) -> None:
    empty = []
    for where, promql in panel_queries(path):
        result = query(stack, promql)
        if result.get("status") != "success" or not result["data"]["result"]:
            empty.append(f"{where}: {promql} -> {result.get('error') or 'no series'}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("path", RAYS, ids=lambda p: p.name)
def test_every_query_of_ray_dashboards_evaluates(stack: Stack, traffic: None, path: Path) -> None:
    failed = []
    for where, promql in panel_queries(path):
        result = query(stack, promql)
        if result.get("status") != "success":
            failed.append(f"{where}: {promql} -> {result.get('error')}")
    assert not failed, "queries Prometheus rejects:\n" + "\n".join(failed)
