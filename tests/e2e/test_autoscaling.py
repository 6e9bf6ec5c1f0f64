"""Replicas follow the load, under Ray's default policy and under the SLO policy.

Default: a step of Locust users makes Serve's autoscaler raise sentiment's target above
min_replicas within one metrics push + upscale_delay_s (plus slack), the new replica then starts
and serves with no failed request, both replicas run while the load lasts, and the deployment
returns to min_replicas after it.

SLO policy (serve/slo_policy.py, as shipped for sentiment): the same step raises the target sooner
than the default policy did, since the replicas' arrival rate and batch-time fit predict the
breach from the first report (no confirmation window, no average to climb), and the deployment
returns to min_replicas after the load ends.

The decision and the replica start are timed apart: starting a replica (importing torch, loading
weights) on a CPU that Locust saturates takes anywhere from 10 to 60 s, which says nothing about
the autoscaler.

Short delays come from a config override deployed with `serve deploy`, as an operator would; the
shipped config is deployed again afterwards.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SERVE_CONFIG, deployment_of
from tests.e2e.conftest import (
    Stack,
    deploy_config,
    locust_totals,
    prometheus_value,
    start_locust,
    wait_until,
)

pytestmark = pytest.mark.e2e

AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,  # two workers of 2 CPUs with one replica per model leave room for one more
    "target_ongoing_requests": 2,
    "upscale_delay_s": 5,
    "downscale_delay_s": 20,
    # Serve averages ongoing requests over this window (30 s by default); a short window lets the
    # average cross the target soon after the step.
    "look_back_period_s": 15,
}
# The SLO policy with the same bounds, an SLO that 8 users on one replica breach, and no upscale
# delay: its prediction needs no confirmation window (as Kubernetes' HPA scales up at once).
SLO_MS = 150
SLO_AUTOSCALING = {
    **AUTOSCALING,
    "upscale_delay_s": 0,
    "look_back_period_s": 5,  # as shipped: replicas record their stats every second
    "policy": {
        "policy_function": "serve.slo_policy:SloPolicy",
        "policy_kwargs": {"p95_ms": SLO_MS},
    },
}
# Replicas push their metrics to the controller this often (sentiment's metrics_interval_s).
METRICS_PUSH_S = 1
# Seconds the new replica may take to start on a saturated CPU.
REPLICA_START_S = 90


def sentiment(stack: Stack) -> dict:
    # A change of policy is a new deployment version: Serve rebuilds the application (for a
    # moment it lists no deployment) and replaces its replicas.
    return stack.deployments().get("sentiment") or {"replicas": [], "target_num_replicas": 0}


def running_replicas(stack: Stack) -> int:
    return sum(r["state"] == "RUNNING" for r in sentiment(stack)["replicas"])


def target_replicas(stack: Stack) -> int:
    return sentiment(stack)["target_num_replicas"]


def prometheus_replicas(stack: Stack) -> float:
    return prometheus_value(stack, 'deployment:ray_serve_replicas:running{deployment="sentiment"}')


# Seconds from the step to the raised target, per policy (the SLO test compares).
DECIDED: dict[str, float] = {}


def deploy_autoscaling(stack: Stack, autoscaling: dict | None, path: Path) -> None:
    """The shipped config with sentiment's autoscaling replaced (None: as shipped), deployed;
    returns once sentiment runs its min_replicas."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    if autoscaling is not None:
        current = deployment_of(config, "sentiment")["autoscaling_config"]
        current.pop("policy", None)  # Ray's default unless `autoscaling` names one
        current.update(autoscaling)
    deploy_config(stack, config, path)
    time.sleep(3)  # the application leaves RUNNING within a second when the change restarts it
    assert wait_until(lambda: settled(stack), 120) is not None, (
        "sentiment did not settle at 1 running replica"
    )


def settled(stack: Stack) -> bool:
    """Every application RUNNING and sentiment at one replica, running."""
    replicas = sentiment(stack)["replicas"]
    return stack.serve_status() == "RUNNING" and [r["state"] for r in replicas] == ["RUNNING"]


def test_replicas_follow_a_step_load_up_and_back_down(stack: Stack, tmp_path: Path) -> None:
    deploy_autoscaling(stack, AUTOSCALING, tmp_path / "override.yaml")
    try:
        csv = tmp_path / "step"
        duration_s = METRICS_PUSH_S + AUTOSCALING["upscale_delay_s"] + REPLICA_START_S + 20
        locust = start_locust(
            stack,
            csv,
            "SentimentUser",
            *("-u", "8", "-r", "8", "-t", f"{duration_s}s", "--exporter-port", "0"),
        )
        decision_limit = METRICS_PUSH_S + AUTOSCALING["upscale_delay_s"] + 25
        decided_after = wait_until(lambda: target_replicas(stack) >= 2, decision_limit)
        running_after = wait_until(lambda: running_replicas(stack) >= 2, REPLICA_START_S)
        seen_in_prometheus = wait_until(lambda: prometheus_replicas(stack) >= 2, 30)
        held = None
        if running_after is not None:
            time.sleep(10)  # both replicas serve under load for a while
            held = running_replicas(stack)
            locust.send_signal(signal.SIGINT)  # Locust stops its users and writes its stats
        output = locust.finish(timeout=duration_s + 120)
        print(f"target raised after {decided_after} s, replica running {running_after} s later")
        if decided_after is not None:
            DECIDED["default"] = decided_after

        assert decided_after is not None, (
            f"the autoscaler did not raise sentiment's target within {decision_limit}s"
        )
        assert running_after is not None, f"the second replica did not start in {REPLICA_START_S}s"
        assert seen_in_prometheus is not None, "Prometheus never saw 2 sentiment replicas"
        assert held == 2, f"{held} replica(s) running at the end of the load, not 2"
        assert locust.returncode == 0, output[-3000:]
        requests_sent, failures, _ = locust_totals(csv)
        assert requests_sent > 0 and failures == 0, (requests_sent, failures)

        back_down = wait_until(
            lambda: running_replicas(stack) == 1, AUTOSCALING["downscale_delay_s"] + 60
        )
        assert back_down is not None, "sentiment did not return to min_replicas"
    finally:
        deploy_autoscaling(stack, None, tmp_path / "shipped.yaml")


def test_slo_policy_scales_up_sooner_and_back_down(stack: Stack, tmp_path: Path) -> None:
    deploy_autoscaling(stack, SLO_AUTOSCALING, tmp_path / "slo.yaml")
    try:
        csv = tmp_path / "slo-step"
        duration_s = METRICS_PUSH_S + 60
        locust = start_locust(
            stack,
            csv,
            "SentimentUser",
            *("-u", "8", "-r", "8", "-t", f"{duration_s}s", "--exporter-port", "0"),
        )
        decided_after = wait_until(lambda: target_replicas(stack) >= 2, duration_s, every_s=0.5)
        locust.send_signal(signal.SIGINT)
        output = locust.finish(timeout=duration_s + 120)
        print(f"SLO policy: target raised after {decided_after} s (default: {DECIDED})")
        assert decided_after is not None, f"the SLO policy kept 1 replica for {duration_s}s"
        assert "default" in DECIDED, "the default policy's test did not record its decision"
        assert decided_after < DECIDED["default"], (decided_after, DECIDED)
        assert locust.returncode == 0, output[-3000:]
        requests_sent, failures, _ = locust_totals(csv)
        assert requests_sent > 0 and failures == 0, (requests_sent, failures)
        back_down = wait_until(
            lambda: target_replicas(stack) == 1 and running_replicas(stack) == 1,
            SLO_AUTOSCALING["downscale_delay_s"] + 90,
        )
        assert back_down is not None, "sentiment did not return to min_replicas"
    finally:
        deploy_autoscaling(stack, None, tmp_path / "shipped.yaml")
