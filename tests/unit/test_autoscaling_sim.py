"""The autoscaling simulator (benchmark/autoscaling_sim.py): its replicas against the closed-form
latency model, and both policies' decisions on a step, through Serve's own policy code."""

from __future__ import annotations

import pytest

from serve.slo_policy import BatchFit
from tests.conftest import ROOT, load_script

sim = load_script(ROOT / "benchmark" / "autoscaling_sim.py")

FIT = BatchFit(intercept_s=0.030, slope_s=0.011, max_batch_size=32)


@pytest.mark.parametrize("rate", [10.0, 30.0, 50.0])
def test_steady_replica_matches_the_latency_model(rate: float) -> None:
    """One replica at a steady rate: the simulated p95 is the model's batch cycle within 15 %
    (the simulator spreads arrivals evenly, so no burst waits behind another)."""
    policy = sim.Policy("default", 1, 1, 1, slo_ms=1000)
    result = sim.simulate(policy, lambda _: rate, 60.0, FIT)
    steady = result["window_p95_s"][1:]  # the first window includes the start
    predicted = FIT.cycle_p95_s(rate)
    assert all(p == pytest.approx(predicted, rel=0.15) for p in steady), (steady, predicted)


def test_slo_policy_scales_up_sooner_with_fewer_replica_seconds_on_a_step() -> None:
    trace = sim.step_trace(5.0, 150.0, 30.0, 200.0)
    results = {
        name: sim.simulate(
            sim.Policy(name, 1, 5, 5, 300.0, upscale_delay_s=0.0 if name == "slo" else 10.0),
            trace,
            300.0,
            FIT,
        )
        for name in ("default", "slo")
    }
    default, slo = results["default"], results["slo"]
    assert slo["first_scale_up_s"] < default["first_scale_up_s"]
    assert slo["slo_attainment"] >= default["slo_attainment"]
    assert slo["replica_seconds"] <= default["replica_seconds"]
    assert slo["failed"] == default["failed"] == 0
    # Both back at min_replicas once the step is over.
    assert slo["history"][-1]["replicas"] == default["history"][-1]["replicas"] == 1


def test_capacity_caps_the_slo_policy() -> None:
    policy = sim.Policy("slo", 1, 8, 3, 300.0, upscale_delay_s=0.0)
    result = sim.simulate(policy, sim.step_trace(5.0, 400.0, 10.0, 120.0), 150.0, FIT)
    assert max(h["replicas"] for h in result["history"]) == 3
