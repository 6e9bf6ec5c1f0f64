"""Autoscaling on a latency SLO: the replica count whose predicted p95 holds the model's target.

Ray's default policy scales on ongoing requests per replica. A replica that batches holds many
requests at a healthy latency (a batch of 16 is 16 ongoing requests), so that signal asks for
replicas the latency does not need. This policy predicts the latency instead.

A replica that receives `r` requests per second runs batches back to back: each batch takes
`T = intercept + slope * n` (the dispatcher's online fit, serve/dispatcher.py) and holds the `n`
requests that arrived while the one before ran, `n = r * T`. So `T = intercept / (1 - slope * r)`
while `slope * r < 1`, and the queue grows without bound past that (or once `n` would exceed the
batch size). A request waits for the batch that runs when it arrives (up to `T`), then for its
own (`T`): its p95 is about `(1 + 0.95) * T`, plus the wait of a burst behind the batches ahead
of it, which grows as `rho / (1 - rho)` with `rho = slope * r`.

The policy takes the fewest replicas whose predicted p95 is below `scale_up_at` of the SLO, and
gives replicas back only down to a count still below `scale_down_at` of it (the gap between the
two keeps a steady load from flapping). A measured p95 above the SLO that the model did not
foresee adds a replica all the same; no arrivals at all return to min_replicas. It never asks for
more replicas than the cluster's free CPUs and memory hold (`SloPolicy.placeable`); what it could
not get is reported as unmet demand.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

# A request's wait at the 95th percentile: the rest of the running batch (95 % of it at most),
# then its own batch.
P95_BATCHES = 1.95
# Targets never closer to a lone request's p95 than this (see decide()).
FLOOR_UP = 1.25
FLOOR_DOWN = 1.1


@dataclass(frozen=True)
class BatchFit:
    """A replica's batch time in seconds: `intercept + slope * size`."""

    intercept_s: float
    slope_s: float
    max_batch_size: int

    def cycle_p95_s(self, rate_per_replica: float) -> float:
        """p95 of evenly spaced arrivals at `rate_per_replica` requests/s: the batch cycle alone
        (inf: the replica falls behind)."""
        if rate_per_replica <= 0:
            return P95_BATCHES * (self.intercept_s + self.slope_s)
        load = self.slope_s * rate_per_replica
        if load >= 1:
            return math.inf
        cycle = self.intercept_s / (1 - load)
        # The batch that forms in one cycle must fit in one batch; else the queue grows.
        if rate_per_replica * cycle > self.max_batch_size:
            return math.inf
        return P95_BATCHES * max(cycle, self.intercept_s + self.slope_s)

    def p95_s(self, rate_per_replica: float) -> float:
        """Predicted p95 of a replica receiving `rate_per_replica` requests/s (inf: it falls
        behind).

        Real arrivals come in bursts, not evenly spaced: near full load a burst waits for the
        batches ahead of it to drain, a wait that grows as load / (1 - load) (queueing's
        utilisation factor). Without it, a fit whose intercept is near 0 (a contended CPU makes
        every text cost about the same) predicts a lone request's latency at 90 % load.
        """
        cycle = self.cycle_p95_s(rate_per_replica)
        load = self.slope_s * max(rate_per_replica, 0.0)
        if not math.isfinite(cycle) or load <= 0:
            return cycle
        return cycle + (self.intercept_s + self.slope_s) * load / (1 - load)


@dataclass(frozen=True)
class Decision:
    replicas: int  # what the policy asks for, within the placeable bounds
    wanted: int  # what the SLO needs, before the cluster's capacity caps it
    predicted_p95_s: float  # at `replicas`

    @property
    def unmet(self) -> int:
        """Replicas the SLO needs that the cluster cannot place."""
        return max(0, self.wanted - self.replicas)


def decide(
    fit: BatchFit,
    arrivals_per_s: float,
    current: int,
    slo_s: float,
    lowest: int,
    highest: int,
    placeable: int,
    measured_p95_s: float | None = None,
    scale_up_at: float = 0.8,
    scale_down_at: float = 0.6,
) -> Decision:
    """The replica count for `arrivals_per_s` across the deployment (see the module's text).

    `lowest`/`highest` are min/max_replicas; `placeable` the most the cluster can run now.
    """
    ceiling = max(lowest, min(highest, placeable))

    def p95(n: int) -> float:
        return fit.p95_s(arrivals_per_s / n)

    # More replicas shorten the queue, not a batch: no count brings p95 below one lone request's.
    # An SLO near or under that floor is aimed at just above it instead of at every replica.
    floor = fit.p95_s(0.0)
    up_at = max(scale_up_at * slo_s, FLOOR_UP * floor)
    down_at = max(scale_down_at * slo_s, FLOOR_DOWN * floor)
    if arrivals_per_s <= 0:
        wanted = lowest
    else:
        wanted = next((n for n in range(max(lowest, 1), highest + 1) if p95(n) <= up_at), highest)
        if wanted < current:
            # Give back only what leaves a wide margin.
            wanted = next((n for n in range(max(lowest, 1), current) if p95(n) <= down_at), current)
        if measured_p95_s is not None and measured_p95_s > max(slo_s, up_at) and wanted <= current:
            wanted = min(current + 1, highest)  # the model missed what the replicas measure
    replicas = max(lowest, min(wanted, ceiling))
    return Decision(replicas=replicas, wanted=wanted, predicted_p95_s=p95(max(replicas, 1)))


# What each replica reports (`record_autoscaling_stats`): its arrivals per second and the p95 it
# measured over the last few seconds, the requests waiting in its queue, and its batch-time fit.
ARRIVALS = "arrivals_per_s"
QUEUED = "queued"
MEASURED_P95 = "p95_s"
ANSWERED = "answered"  # how many answers that p95 is of
INTERCEPT = "batch_intercept_s"
SLOPE = "batch_slope_s"
MAX_BATCH = "max_batch_size"
CPUS = "reserved_cpus"  # what Serve reserved for the replica: the size of a slot to place one
MEMORY = "reserved_memory_bytes"
REPORTED = (ARRIVALS, QUEUED, INTERCEPT, SLOPE, MAX_BATCH)

# A backlog counts as extra arrivals that the replicas should clear within this many seconds.
DRAIN_S = 10.0
# A replica's measured p95 counts once it is of this many answers: of a few, one answer that
# waited behind another application's batch on a shared machine is the p95.
MIN_ANSWERS = 50


class Fitted(Protocol):
    window: deque[tuple[int, float]]

    def fit(self) -> tuple[float, float] | None: ...


@dataclass
class ReplicaReport:
    """A replica's side of the policy: what it saw since its last report, in the keys above.
    Serve calls the deployment's `record_autoscaling_stats` every few seconds."""

    since: float
    arrivals: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def arrive(self) -> None:
        self.arrivals += 1

    def answered(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def report(
        self,
        now: float,
        queued: int,
        batch_time: Fitted,
        max_batch_size: int,
        reserved: dict[str, float],
    ) -> dict[str, float]:
        elapsed = max(now - self.since, 1e-6)
        stats = {
            ARRIVALS: self.arrivals / elapsed,
            QUEUED: float(queued),
            CPUS: reserved.get("CPU", 0.0),
            MEMORY: reserved.get("memory", 0.0),
        }
        # 0 when it answered nothing: every report carries every key, so the newest sample of
        # each series is from the same moment (the policy reads the newest, `latest`).
        ordered = sorted(self.latencies)
        stats[MEASURED_P95] = (
            ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
        )
        stats[ANSWERED] = float(len(ordered))
        fitted = batch_time.fit()
        if fitted is None and batch_time.window:
            # Batches of one size only (a lone client, or always full): half of their time is
            # taken as fixed, so the prediction errs towards more replicas.
            size = sum(n for n, _ in batch_time.window) / len(batch_time.window)
            seconds = sum(t for _, t in batch_time.window) / len(batch_time.window)
            fitted = (seconds / 2, seconds / 2 / size)
        if fitted is not None:
            stats.update({INTERCEPT: fitted[0], SLOPE: fitted[1], MAX_BATCH: float(max_batch_size)})
        self.since, self.arrivals = now, 0
        self.latencies.clear()
        return stats


def latest(ctx: Any, key: str) -> dict[Any, float]:
    """Each replica's newest report of `key`: Serve averages `aggregated_metrics` over
    `look_back_period_s` (30 s by default), too slow for a step in load."""
    series = (ctx.raw_metrics or {}).get(key) or {}
    newest = {replica: points[-1].value for replica, points in series.items() if points}
    return newest or dict((ctx.aggregated_metrics or {}).get(key) or {})


def free_resources() -> dict[str, float]:
    """The cluster's unreserved resources (the policy runs in Serve's controller, a Ray actor)."""
    import ray

    return ray.available_resources()


class Gauges:
    """The policy's view, exported from the controller: Prometheus gets the SLO, the predicted
    and measured p95, the replicas the SLO wants and those the cluster could not place."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        keys = ("application", "deployment")
        self.gauges = {
            name: Gauge(name, description=text, tag_keys=keys)
            for name, text in (
                ("slo_p95_seconds", "The deployment's latency SLO (p95)."),
                ("slo_predicted_p95_seconds", "p95 the SLO policy predicts at its decision."),
                ("slo_measured_p95_seconds", "p95 the replicas measured (the highest)."),
                ("slo_desired_replicas", "Replicas the SLO needs, before placement caps them."),
                ("slo_unmet_replicas", "Replicas the SLO needs that the cluster cannot place."),
            )
        }

    def set(self, ctx: Any, values: dict[str, float | None]) -> None:
        tags = {"application": ctx.app_name or "", "deployment": ctx.deployment_name}
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self.gauges[name].set(value, tags=tags)


class SloPolicy:
    """Serve's custom policy (`autoscaling_config.policy`), one instance per deployment:

        policy:
          policy_function: serve.slo_policy:SloPolicy
          policy_kwargs: {p95_ms: 300}

    Until a running replica has reported its stats it holds the current target (a new
    deployment starts at min_replicas either way).

    Placeable: the replicas Serve already asked for, plus as many more as the cluster's free
    CPUs (and memory) hold at each replica's reservation. A replica that has not started after
    `start_grace_s` while nothing is free is taken as unplaceable: the target drops back to what
    runs, and the rest is reported as unmet demand instead of held as pending resources.
    """

    start_grace_s = 60.0

    def __init__(self, p95_ms: float, scale_up_at: float = 0.8, scale_down_at: float = 0.6) -> None:
        if not 0 < scale_down_at < scale_up_at <= 1:
            raise ValueError(
                f"need 0 < scale_down_at < scale_up_at <= 1, got {scale_down_at}, {scale_up_at}"
            )
        self.slo_s = p95_ms / 1000
        self.scale_up_at, self.scale_down_at = scale_up_at, scale_down_at
        self.free_resources = free_resources
        self.gauges: Gauges | None = None
        self.short_since: float | None = None  # since when a wanted replica has had no room

    def placeable(self, ctx: Any, reserved: dict[str, float]) -> int:
        if not reserved:  # a replica that reserves nothing always has room
            return ctx.capacity_adjusted_max_replicas
        free = self.free_resources()
        slots = min(
            (math.floor(free.get(name, 0.0) / amount) for name, amount in reserved.items()),
            default=0,
        )
        running, target = ctx.current_num_replicas, ctx.target_num_replicas
        if slots > 0 or target <= running:
            self.short_since = None
            return min(max(target, running) + slots, ctx.capacity_adjusted_max_replicas)
        now = ctx.current_time
        self.short_since = self.short_since if self.short_since is not None else now
        if now - self.short_since < self.start_grace_s:
            return min(target, ctx.capacity_adjusted_max_replicas)
        return running

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        reported = {key: latest(ctx, key) for key in REPORTED}
        replicas = [r for r in ctx.running_replicas if all(r in m for m in reported.values())]
        if not replicas:
            return ctx.target_num_replicas, {"predicted_p95_s": None, "unmet": 0}

        def total(key: str) -> float:
            return sum(reported[key][r] for r in replicas)

        fit = BatchFit(
            intercept_s=total(INTERCEPT) / len(replicas),
            slope_s=total(SLOPE) / len(replicas),
            max_batch_size=int(min(reported[MAX_BATCH][r] for r in replicas)),
        )
        # Running replicas that have not reported yet receive their share too.
        share = max(ctx.current_num_replicas, 1) / len(replicas)
        rate = (total(ARRIVALS) + total(QUEUED) / DRAIN_S) * share
        answered = latest(ctx, ANSWERED)
        p95s = latest(ctx, MEASURED_P95)
        measured = max((p95s[r] for r in p95s if answered.get(r, 0) >= MIN_ANSWERS), default=None)
        reserved = {
            name: max(latest(ctx, key).get(r, 0.0) for r in replicas)
            for name, key in (("CPU", CPUS), ("memory", MEMORY))
        }
        decision = decide(
            fit,
            rate,
            # Replicas still starting count as there: their share of the load is theirs.
            current=max(ctx.current_num_replicas, ctx.target_num_replicas),
            slo_s=self.slo_s,
            lowest=ctx.capacity_adjusted_min_replicas,
            highest=ctx.config.max_replicas,
            placeable=self.placeable(ctx, {k: v for k, v in reserved.items() if v > 0}),
            measured_p95_s=measured,
            scale_up_at=self.scale_up_at,
            scale_down_at=self.scale_down_at,
        )
        if self.gauges is None:
            self.gauges = Gauges()
        self.gauges.set(
            ctx,
            {
                "slo_p95_seconds": self.slo_s,
                "slo_predicted_p95_seconds": decision.predicted_p95_s,
                "slo_measured_p95_seconds": max(p95s.values(), default=None),
                "slo_desired_replicas": float(decision.wanted),
                "slo_unmet_replicas": float(decision.unmet),
            },
        )
        state = {
            "predicted_p95_s": decision.predicted_p95_s,
            "unmet": decision.unmet,
            "demand_per_s": rate,
        }
        return decision.replicas, state
