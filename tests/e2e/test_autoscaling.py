"""Replicas follow the load: a step of Locust users makes Serve's autoscaler raise sentiment's
target above min_replicas within one metrics push + upscale_delay_s (plus slack), the new replica
then starts and serves with no failed request, and the deployment returns to min_replicas after
downscale_delay_s.

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
    # average cross the target soon after the step. It must exceed the 10 s metrics interval.
    "look_back_period_s": 15,
}
# Handles push their ongoing-request counts to the controller this often
# (RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S).
METRICS_PUSH_S = 10
# Seconds the new replica may take to start on a saturated CPU.
REPLICA_START_S = 90


def sentiment(stack: Stack) -> dict:
    return stack.deployments()["sentiment"]


def running_replicas(stack: Stack) -> int:
    return sum(r["state"] == "RUNNING" for r in sentiment(stack)["replicas"])


def target_replicas(stack: Stack) -> int:
    return sentiment(stack)["target_num_replicas"]


def prometheus_replicas(stack: Stack) -> float:
    return prometheus_value(stack, 'deployment:ray_serve_replicas:running{deployment="sentiment"}')


def test_replicas_follow_a_step_load_up_and_back_down(stack: Stack, tmp_path: Path) -> None:
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    override = yaml.safe_load(SERVE_CONFIG.read_text())
    sentiment = deployment_of(override, "sentiment")
    sentiment["autoscaling_config"].update(AUTOSCALING)
    deploy_config(stack, override, tmp_path / "override.yaml")
    try:
        assert wait_until(lambda: running_replicas(stack) == 1, 60) is not None

        csv = tmp_path / "step"
        duration_s = METRICS_PUSH_S + AUTOSCALING["upscale_delay_s"] + REPLICA_START_S + 20
        locust = start_locust(
            stack,
            csv,
            "SentimentUser",
            *("-u", "8", "-r", "8", "-t", f"{duration_s}s", "--exporter-port", "0"),
        )
        decision_limit = METRICS_PUSH_S + AUTOSCALING["upscale_delay_s"] + 20
        decided_after = wait_until(lambda: target_replicas(stack) >= 2, decision_limit)
        running_after = wait_until(lambda: running_replicas(stack) >= 2, REPLICA_START_S)
        seen_in_prometheus = wait_until(lambda: prometheus_replicas(stack) >= 2, 30)
        if running_after is not None:
            time.sleep(10)  # both replicas serve under load for a while
            locust.send_signal(signal.SIGINT)  # Locust stops its users and writes its stats
        output = locust.finish(timeout=duration_s + 120)
        print(f"target raised after {decided_after} s, replica running {running_after} s later")

        assert decided_after is not None, (
            f"the autoscaler did not raise sentiment's target within {decision_limit}s"
        )
        assert running_after is not None, f"the second replica did not start in {REPLICA_START_S}s"
        assert seen_in_prometheus is not None, "Prometheus never saw 2 sentiment replicas"
        assert locust.returncode == 0, output[-3000:]
        requests_sent, failures, _ = locust_totals(csv)
        assert requests_sent > 0 and failures == 0, (requests_sent, failures)

        back_down = wait_until(
            lambda: running_replicas(stack) == 1, AUTOSCALING["downscale_delay_s"] + 60
        )
        assert back_down is not None, "sentiment did not return to min_replicas"
        assert back_down >= AUTOSCALING["downscale_delay_s"] - 5, "scaled down before the delay"
    finally:
        deploy_config(stack, shipped, tmp_path / "shipped.yaml")
