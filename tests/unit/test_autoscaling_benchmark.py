"""benchmark/autoscaling.py's figures from a run's records, and its configs for the two policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, load_script

bench = load_script(ROOT / "benchmark" / "autoscaling.py")


def test_summary_of_a_run(tmp_path: Path) -> None:
    started = 1000.0
    record = tmp_path / "run.requests"
    # Window 0: 20 requests at 100 ms. Window 1: 20 at 900 ms, one of them failed.
    lines = [f"{started + 1 + i * 0.1:.3f} 100.0 1" for i in range(20)]
    lines += [f"{started + 11 + i * 0.1:.3f} 900.0 {0 if i == 0 else 1}" for i in range(20)]
    record.write_text("\n".join(lines) + "\n")
    # One replica, the target raised at 12 s, two replicas from 15 s, back to one at 30 s.
    timeline = [(float(t), 1, 1) for t in range(12)]
    timeline += [(float(t), 1, 2) for t in range(12, 15)]
    timeline += [(float(t), 2, 2) for t in range(15, 30)]
    timeline += [(float(t), 1, 1) for t in range(30, 41)]
    run = bench.summarize(timeline, record, started, rise_s=10.0, slo_s=0.3)
    assert run["slo_attainment"] == 0.5  # window 0 within 300 ms, window 1 not
    assert run["failed"] == 1 and run["requests"] == 40
    assert run["first_scale_up_s"] == pytest.approx(2.0)
    assert run["scale_events"] == 2
    assert run["replica_seconds"] == pytest.approx(40 + 15)  # 40 s of one, 15 s of a second


def test_policy_configs_differ_only_in_the_policy() -> None:
    model_dir = Path("/models")
    slo = bench.policy_config(model_dir, "slo", 1, 2)
    default = bench.policy_config(model_dir, "default", 1, 2)

    def autoscaling(config: dict) -> dict:
        app = next(a for a in config["applications"] if a["name"] == "sentiment")
        return app["deployments"][0]["autoscaling_config"]

    assert autoscaling(slo)["policy"]["policy_function"] == "serve.slo_policy:SloPolicy"
    assert "policy" not in autoscaling(default)
    assert autoscaling(default)["upscale_delay_s"] == 10
    for config in (slo, default):
        assert (autoscaling(config)["min_replicas"], autoscaling(config)["max_replicas"]) == (1, 2)


def test_shape_timing_follows_the_loadtest_shapes() -> None:
    """Read in a process of its own (Locust cannot be imported here)."""
    assert bench.shape_timing("spike") == (210.0, 30.0)  # 30 s quiet, 60 s spike, 120 s after
    length, rise = bench.shape_timing("step")
    assert rise == 20.0 and length > 200
    assert bench.shape_timing("ramp")[1] == 0.0
