"""Discrete-time simulator of one model's replicas under Ray's default policy and the SLO policy.

Replicas batch as this project's dispatcher does (a batch takes what queued while the one before
ran; it costs `intercept + slope * size`), requests are spread evenly over the ready replicas,
and a new replica serves after `startup_s`. Both policies are Serve's own code paths: Ray's
`replica_queue_length_autoscaling_policy` and serve/slo_policy.py's `SloPolicy`, each called with
Serve's `AutoscalingContext` and followed by Serve's scaling factors, delays and bounds. So the
behaviour on 16-128 replica clusters is computed from the same decisions a real cluster makes, with
the batch-time model measured on this one.

    python benchmark/autoscaling_sim.py --replicas 128 --out build/autoscaling_sim.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve.slo_policy import (  # noqa: E402
    ARRIVALS,
    INTERCEPT,
    MAX_BATCH,
    MEASURED_P95,
    QUEUED,
    SLOPE,
    BatchFit,
    SloPolicy,
)

DT_S = 0.05  # simulation step
SUBSTEPS = 5  # arrivals within a step, spread evenly
DECIDE_EVERY_S = 1.0  # how often the controller decides (Serve's loop is faster; metrics lag)
# Replicas push their metrics every second (sentiment's metrics_interval_s in the Serve config),
# sampled every look_back_period_s * 0.2: the controller decides on what the last push held.
PUSH_S = 1.0
RECORD_S = 6.0
WINDOW_S = 10.0  # SLO attainment is judged per window of this length
TIMEOUT_S = 30.0  # a request older than this when it would start has failed

# Sentiment on one core of the 2-core test machine: a round figure of the dispatcher's fit there.
SENTIMENT = BatchFit(intercept_s=0.030, slope_s=0.011, max_batch_size=32)

Trace = Callable[[float], float]  # seconds -> arrivals per second


def step_trace(low: float, high: float, at: float, until: float) -> Trace:
    return lambda t: high if at <= t < until else low


def spike_trace(low: float, high: float, at: float, length: float) -> Trace:
    return step_trace(low, high, at, at + length)


def diurnal_trace(low: float, high: float, period: float) -> Trace:
    return lambda t: low + (high - low) * (1 - math.cos(2 * math.pi * t / period)) / 2


def ramp_trace(low: float, high: float, start: float, end: float) -> Trace:
    return lambda t: low + (high - low) * min(1.0, max(0.0, (t - start) / (end - start)))


def replay_trace(requests_per_s: list[int]) -> Trace:
    """A real run's requests per second (benchmark/autoscaling.py's `requests_per_s`)."""
    return lambda t: float(requests_per_s[min(int(t), len(requests_per_s) - 1)])


@dataclass
class Replica:
    ready_at: float
    queue: deque[list[float]] = field(default_factory=deque)  # [arrival time, count]
    busy_until: float = 0.0
    running: float = 0.0  # requests in the batch that runs until busy_until
    queued: float = 0.0

    def ongoing(self, now: float) -> float:
        return self.queued + (self.running if self.busy_until > now else 0.0)

    def take(self, n: float, until: float) -> list[tuple[float, float]]:
        """Up to `n` requests, oldest first, of those that arrived by `until`."""
        taken: list[tuple[float, float]] = []
        while n > 1e-9 and self.queue and self.queue[0][0] <= until:
            arrival, count = self.queue[0]
            part = min(count, n)
            taken.append((arrival, part))
            n -= part
            self.queued -= part
            if part >= count - 1e-9:
                self.queue.popleft()
            else:
                self.queue[0][1] = count - part
        return taken


@dataclass
class Policy:
    """One of the two policies, with Serve's wrapper around it (factors, delays, bounds)."""

    name: str
    min_replicas: int
    max_replicas: int
    placeable: int
    slo_ms: float
    target_ongoing_requests: float = 3.0
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 60.0
    look_back_s: float = 30.0
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ray.serve.config import AutoscalingConfig

        self.config = AutoscalingConfig(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_ongoing_requests=self.target_ongoing_requests,
            upscale_delay_s=self.upscale_delay_s,
            downscale_delay_s=self.downscale_delay_s,
            look_back_period_s=self.look_back_s,
        )
        self.slo = SloPolicy(p95_ms=self.slo_ms) if self.name == "slo" else None

    def decide(
        self, now: float, current: int, target: int, stats: dict[str, float], ongoing: float
    ) -> tuple[int, dict[str, Any]]:
        from ray.serve._private.common import DeploymentID, ReplicaID
        from ray.serve.autoscaling_policy import (
            _apply_delay_logic,
            _apply_scaling_factors,
            replica_queue_length_autoscaling_policy,
        )
        from ray.serve.config import AutoscalingContext

        deployment = DeploymentID(name="model", app_name="model")
        running = [ReplicaID(unique_id=str(i), deployment_id=deployment) for i in range(current)]
        ctx = AutoscalingContext(
            deployment_id=deployment,
            deployment_name="model",
            app_name="model",
            current_num_replicas=current,
            target_num_replicas=target,
            running_replicas=running,
            total_num_requests=ongoing,
            total_queued_requests=0.0,
            aggregated_metrics={key: {r: value for r in running} for key, value in stats.items()},
            raw_metrics={},
            capacity_adjusted_min_replicas=self.min_replicas,
            capacity_adjusted_max_replicas=min(self.max_replicas, self.placeable),
            policy_state=dict(self.state),
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=now,
            config=self.config,
        )
        if self.slo is not None:
            desired, info = self.slo(ctx)
        else:
            desired, info = replica_queue_length_autoscaling_policy(ctx)
        desired = _apply_scaling_factors(desired, current, self.config)
        decided, self.state = _apply_delay_logic(
            max(0, desired), target, self.config, dict(self.state), _now=now
        )
        bounded = max(self.min_replicas, min(decided, self.max_replicas, self.placeable))
        return bounded, info or {}


def weighted_p95(samples: list[tuple[float, float]]) -> float:
    total = sum(count for _, count in samples)
    if total <= 0:
        return 0.0
    seen = 0.0
    for latency, count in sorted(samples):
        seen += count
        if seen >= 0.95 * total:
            return latency
    return samples[-1][0]


def simulate(
    policy: Policy,
    trace: Trace,
    duration_s: float,
    fit: BatchFit = SENTIMENT,
    startup_s: float = 15.0,
) -> dict[str, Any]:
    """Run `trace` for `duration_s`; the figures benchmark/autoscaling.py writes for a real run."""
    replicas = [Replica(ready_at=0.0) for _ in range(policy.min_replicas)]
    target = policy.min_replicas
    windows: dict[int, list[tuple[float, float]]] = {}
    # Per step: arrivals/s, ongoing, queued and the p95 of the batches that ended, per replica.
    records: list[tuple[float, float, float, float]] = []
    replica_seconds = failed = 0.0
    scale_events = 0
    first_up: float | None = None
    history: list[dict[str, Any]] = []
    steps = int(duration_s / DT_S)
    next_decision = DECIDE_EVERY_S
    for i in range(steps):
        now = i * DT_S
        ready = [r for r in replicas if r.ready_at <= now] or replicas[:1]
        arrivals = trace(now) * DT_S
        for replica in ready:
            # Spread over the step: a request that arrives while a batch runs waits for its end.
            share = arrivals / len(ready) / SUBSTEPS
            for k in range(SUBSTEPS):
                replica.queue.append([now + (k + 0.5) * DT_S / SUBSTEPS, share])
            replica.queued += arrivals / len(ready)
        step_latencies: list[tuple[float, float]] = []
        for replica in ready:
            while replica.queue:
                start = max(replica.busy_until, replica.queue[0][0])
                if start >= now + DT_S:
                    break
                batch = replica.take(fit.max_batch_size, until=start)
                size = sum(count for _, count in batch)
                replica.running = size
                replica.busy_until = start + fit.intercept_s + fit.slope_s * max(size, 1.0)
                for arrival, count in batch:
                    if start - arrival > TIMEOUT_S:
                        failed += count
                    else:
                        step_latencies.append((replica.busy_until - arrival, count))
        windows.setdefault(int(now // WINDOW_S), []).extend(step_latencies)
        replica_seconds += len(replicas) * DT_S
        records.append(
            (
                arrivals / DT_S / len(ready),
                sum(r.ongoing(now) for r in ready),
                sum(r.queued for r in ready) / len(ready),
                weighted_p95(step_latencies),
            )
        )
        if now + 1e-9 < next_decision:
            continue
        next_decision += DECIDE_EVERY_S
        pushed = int((now // PUSH_S) * PUSH_S / DT_S)  # the steps the controller has seen
        if pushed == 0:
            continue
        recent = records[max(0, pushed - int(RECORD_S / DT_S)) : pushed]
        look_back = records[max(0, pushed - int(policy.look_back_s / DT_S)) : pushed]
        stats = {
            ARRIVALS: sum(r[0] for r in recent) / len(recent),
            QUEUED: records[pushed - 1][2],
            MEASURED_P95: max(r[3] for r in recent),
            INTERCEPT: fit.intercept_s,
            SLOPE: fit.slope_s,
            MAX_BATCH: float(fit.max_batch_size),
        }
        ongoing = sum(r[1] for r in look_back) / len(look_back)
        decided, info = policy.decide(now, len(ready), target, stats, ongoing)
        if decided != target:
            scale_events += 1
            if decided > target and first_up is None:
                first_up = now
            target = decided
        while len(replicas) < target:
            replicas.append(Replica(ready_at=now + startup_s))
        while len(replicas) > target:
            gone = replicas.pop()
            stays = [r for r in replicas if r.ready_at <= now] or replicas
            # Its queue moves to a replica that stays, in arrival order.
            stays[0].queue = deque(sorted([*stays[0].queue, *gone.queue]))
            stays[0].queued += gone.queued
        history.append(
            {"t": round(now, 2), "replicas": len(replicas), "ready": len(ready),
             "predicted_p95_s": info.get("predicted_p95_s")}
        )  # fmt: skip
    slo_s = policy.slo_ms / 1000
    judged = [weighted_p95(samples) for samples in windows.values() if samples]
    return {
        "slo_attainment": round(sum(p <= slo_s for p in judged) / max(len(judged), 1), 3),
        "replica_seconds": round(replica_seconds, 1),
        "first_scale_up_s": first_up,
        "scale_events": scale_events,
        "failed": round(failed),
        "window_p95_s": [round(p, 3) for p in judged],
        "history": history,
    }


def shapes(base: float, peak: float) -> dict[str, tuple[Trace, float]]:
    """The traces benchmark/autoscaling.py drives with Locust, plus a day compressed to 20 min."""
    return {
        "step": (step_trace(base, peak, 60, 360), 480.0),
        "spike": (spike_trace(base, peak, 60, 30), 300.0),
        "ramp": (ramp_trace(base, peak, 30, 330), 420.0),
        "diurnal": (diurnal_trace(base, peak, 1200), 1200.0),
    }


def compare(
    replicas: int, slo_ms: float, per_replica_peak: float = 60.0, fit: BatchFit = SENTIMENT
) -> dict[str, Any]:
    """Both policies on every shape, on a cluster that can place `replicas` replicas."""
    peak = per_replica_peak * replicas * 0.8
    out: dict[str, Any] = {}
    for shape, (trace, duration) in shapes(peak * 0.05, peak).items():
        out[shape] = {}
        for name in ("default", "slo"):
            # As the Serve config ships them: the SLO policy scales up without a delay.
            delay = 0.0 if name == "slo" else 10.0
            policy = Policy(name, 1, replicas, replicas, slo_ms, upscale_delay_s=delay)
            result = simulate(policy, trace, duration, fit)
            result.pop("history")
            out[shape][name] = result
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--slo-ms", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "autoscaling_sim.json")
    args = parser.parse_args(argv)
    results = {str(n): compare(n, args.slo_ms) for n in args.replicas}
    for n, by_shape in results.items():
        for shape, pair in by_shape.items():
            line = ", ".join(
                f"{name}: SLO {r['slo_attainment']:.2f}, {r['replica_seconds']:.0f} replica-s, "
                f"{r['scale_events']} events, {r['failed']} failed"
                for name, r in pair.items()
            )
            print(f"{n} replicas, {shape}: {line}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
