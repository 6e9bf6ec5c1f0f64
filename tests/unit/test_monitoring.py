"""Prometheus config, rules and Grafana dashboard files, checked without a running stack."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SERVE_CONFIG, load_script

PROMETHEUS = ROOT / "prometheus"
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").rglob("*.json"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Debian's promtool on the host, else the one in the stack's Prometheus image."""
    if shutil.which("promtool"):
        cmd = ["promtool", *args]
    elif shutil.which("docker"):
        image = "prom/prometheus:v2.53.2"
        env = ROOT / ".env"
        if env.exists():
            for line in env.read_text().splitlines():
                if line.startswith("PROMETHEUS_IMAGE="):
                    image = line.split("=", 1)[1]
        cmd = [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{PROMETHEUS}:/etc/prometheus:ro",
            "-w",
            "/etc/prometheus",
            "--entrypoint",
            "/bin/promtool",
            image,
            *args,
        ]
    else:
        pytest.skip("no promtool and no docker here; .ci/run installs Debian's prometheus package")
    return subprocess.run(cmd, cwd=PROMETHEUS, capture_output=True, text=True)


def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    rules = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    result = promtool("check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_annotations() -> None:
    alerts = [
        rule
        for group in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "tests" / "alerts_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    for alert in alerts:
        assert alert["alert"] in tested, f"{alert['alert']} has no firing unit test"
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_serve_limits_match_serve_config() -> None:
    module = load_script(ROOT / "prometheus" / "serve_limits.py")
    expected = module.render(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert (PROMETHEUS / "rules" / "serve_limits.yml").read_text() == expected, (
        "prometheus/rules/serve_limits.yml is stale: run python prometheus/serve_limits.py"
    )


def provisioned_uid() -> str:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = config["datasources"]
    return datasource["uid"]


def datasource_refs(node: object) -> list[object]:
    refs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                refs.append(value)
            else:
                refs.extend(datasource_refs(value))
    elif isinstance(node, list):
        for value in node:
            refs.extend(datasource_refs(value))
    return refs


def test_dashboards_exist() -> None:
    names = {p.name for p in DASHBOARDS}
    assert "serving_autoscaling.json" in names
    assert {
        "default_grafana_dashboard.json",
        "serve_grafana_dashboard.json",
        "serve_deployment_grafana_dashboard.json",
    } <= names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_datasources_resolve_to_provisioned_uid(path: Path) -> None:
    uid = provisioned_uid()
    dashboard = json.loads(path.read_text())
    refs = datasource_refs(dashboard.get("panels", [])) + datasource_refs(
        dashboard.get("templating", {})
    )
    assert refs, f"{path.name} has no datasource references"
    for ref in refs:
        assert isinstance(ref, dict) and ref.get("uid") == uid, f"{path.name}: {ref!r}"


def test_dashboard_uids_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert all(uids) and len(uids) == len(set(uids)), uids


def test_a_constant_series_does_not_count_as_panel_data() -> None:
    """The e2e panel check on our dashboard: a series must move, except configuration reference
    lines and series flat at their healthy value; Ray's dashboards only need a series."""
    from tests.e2e.test_monitoring import counts_as_data

    def result(*values: str) -> dict:
        series = {"metric": {}, "values": [[i, v] for i, v in enumerate(values)]}
        return {"status": "success", "data": {"result": [series]}}

    flat, moving = result("5", "5", "5"), result("1", "3", "2")
    empty = {"status": "success", "data": {"result": []}}
    assert counts_as_data(None, "sum(rate(x[1m]))", moving, ours=True)
    assert not counts_as_data(None, "sum(rate(x[1m]))", flat, ours=True)
    assert not counts_as_data(None, "sum(rate(x[1m]))", empty, ours=True)
    # A configuration line is data however flat; it cannot stand in for the panel's others.
    assert counts_as_data(None, 'deployment:ray_serve_max_replicas:config{a="b"}', flat, True)
    assert counts_as_data(None, "sum(rate(x[1m]))", flat, ours=False)
    # Flat on a healthy stack, at the healthy value only.
    failures = 'sum by (name) (locust_failures_per_second{job="locust"})'
    assert counts_as_data(None, failures, result("0", "0"), ours=True)
    assert not counts_as_data(None, failures, result("2", "2"), ours=True)
