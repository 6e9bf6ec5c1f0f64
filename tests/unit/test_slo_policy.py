"""The SLO policy's latency model and decisions on scripted loads (serve/slo_policy.py)."""

import math
from typing import Any

import pytest

from serve.dispatcher import BatchTimeModel
from serve.slo_policy import (
    ANSWERED,
    ARRIVALS,
    CPUS,
    DRAIN_S,
    INTERCEPT,
    MAX_BATCH,
    MEASURED_P95,
    MIN_ANSWERS,
    P95_BATCHES,
    QUEUED,
    SLOPE,
    BatchFit,
    ReplicaReport,
    SloPolicy,
    decide,
    latest,
)

# Sentiment on one core of the shared test machine: 30 ms fixed, 11 ms per text, batches of 32.
FIT = BatchFit(intercept_s=0.030, slope_s=0.011, max_batch_size=32)
SLO_S = 0.3


def test_p95_follows_the_batch_cycle() -> None:
    # 40 requests/s on one replica: T = 0.03 / (1 - 0.44), p95 = 1.95 T, plus a burst's wait
    # behind the batches ahead of it, (0.03 + 0.011) * 0.44 / 0.56.
    assert FIT.cycle_p95_s(40) == pytest.approx(P95_BATCHES * 0.030 / 0.56)
    assert FIT.p95_s(40) == pytest.approx(P95_BATCHES * 0.030 / 0.56 + 0.041 * 0.44 / 0.56)
    assert FIT.p95_s(0) == pytest.approx(P95_BATCHES * 0.041)  # one request alone
    assert FIT.p95_s(1 / 0.011) == math.inf  # the replica's whole time goes to texts
    # Below that rate, but the batch that forms in one cycle is larger than 32.
    assert BatchFit(0.030, 0.011, max_batch_size=8).p95_s(80) == math.inf


def test_a_fit_without_fixed_cost_still_sees_the_queue_near_full_load() -> None:
    """Measured on the stack: 8 Locust users on one replica of a shared 2-core machine, 18
    requests/s, every text ~50 ms whatever the batch (intercept 0). The batch cycle alone
    predicted 0.10 s while the replica measured a p95 of 0.35-0.70 s."""
    contended = BatchFit(intercept_s=0.0, slope_s=0.05, max_batch_size=32)
    assert contended.cycle_p95_s(18) == pytest.approx(0.0975)
    assert contended.p95_s(18) > 0.5  # the burst's wait: 0.05 * 0.9 / 0.1
    decision = decide(contended, 18, 1, 0.15, 1, 2, 2)
    assert decision.replicas == 2


def test_predicted_latency_rises_with_load() -> None:
    rates = [0, 10, 20, 40, 60, 80]
    predicted = [FIT.p95_s(r) for r in rates]
    assert predicted == sorted(predicted)


def test_scales_up_before_the_slo_is_breached() -> None:
    # The load where one replica's predicted p95 passes 80 % of the SLO, but not yet the SLO.
    rate = next(r for r in range(1, 200) if FIT.p95_s(r) > 0.8 * SLO_S)
    assert FIT.p95_s(rate) < SLO_S
    decision = decide(FIT, rate, current=1, slo_s=SLO_S, lowest=1, highest=5, placeable=5)
    assert decision.replicas == 2
    assert decision.predicted_p95_s <= 0.8 * SLO_S
    below = decide(FIT, rate - 1, current=1, slo_s=SLO_S, lowest=1, highest=5, placeable=5)
    assert below.replicas == 1


def test_a_step_asks_for_every_replica_it_needs_at_once() -> None:
    decision = decide(FIT, 200, current=1, slo_s=SLO_S, lowest=1, highest=8, placeable=8)
    n = decision.replicas
    assert FIT.p95_s(200 / n) <= 0.8 * SLO_S < FIT.p95_s(200 / (n - 1))
    assert n >= 3


def test_steady_load_does_not_flap() -> None:
    """Any steady rate: the decision, fed back as the current count, settles and stays."""
    for rate in range(0, 240, 3):
        current, seen = 1, []
        for _ in range(12):
            current = decide(
                FIT, rate, current=current, slo_s=SLO_S, lowest=1, highest=10, placeable=10
            ).replicas
            seen.append(current)
        assert len(set(seen[2:])) == 1, (rate, seen)


def test_scales_down_only_to_what_keeps_a_wide_margin() -> None:
    # 4 replicas, a load that 2 carry within 80 % of the SLO but only 3 within 60 %.
    rate = 2 * next(r for r in range(1, 200) if FIT.p95_s(r) > 0.65 * SLO_S)
    assert FIT.p95_s(rate / 2) <= 0.8 * SLO_S
    decision = decide(FIT, rate, current=4, slo_s=SLO_S, lowest=1, highest=5, placeable=5)
    assert decision.replicas == 3
    assert FIT.p95_s(rate / 3) <= 0.6 * SLO_S
    # A replica fewer would sit between 60 % and 80 % of the SLO: hold.
    rate = next(r for r in range(1, 200) if FIT.p95_s(r) > 0.7 * SLO_S)
    decision = decide(FIT, rate, current=2, slo_s=SLO_S, lowest=1, highest=5, placeable=5)
    assert decision.replicas == 2
    # No load at all: back to min_replicas.
    assert decide(FIT, 0, current=5, slo_s=SLO_S, lowest=2, highest=5, placeable=5).replicas == 2


def test_never_above_what_the_cluster_can_place() -> None:
    decision = decide(FIT, 300, current=2, slo_s=SLO_S, lowest=1, highest=8, placeable=3)
    assert decision.replicas == 3
    assert decision.wanted > 3
    assert decision.unmet == decision.wanted - 3
    placed = decide(FIT, 10, current=1, slo_s=SLO_S, lowest=1, highest=8, placeable=3)
    assert placed.unmet == 0


def test_a_measured_breach_the_model_missed_adds_a_replica() -> None:
    kwargs = {"current": 2, "slo_s": SLO_S, "lowest": 1, "highest": 5, "placeable": 5}
    assert decide(FIT, 20, **kwargs).replicas <= 2
    assert decide(FIT, 20, measured_p95_s=0.45, **kwargs).replicas == 3
    assert decide(FIT, 20, measured_p95_s=0.25, **kwargs).replicas <= 2


def context(
    rate_per_replica: float,
    replicas: int,
    placeable: int = 5,
    reported: int = -1,
    queued: float = 0.0,
    target: int | None = None,
    now: float = 0.0,
    raw: dict | None = None,
) -> Any:
    """Serve's own context, as the controller builds it, with `reported` replicas' stats."""
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    deployment = DeploymentID(name="SentimentModel", app_name="sentiment")
    running = [ReplicaID(unique_id=f"r{i}", deployment_id=deployment) for i in range(replicas)]
    shown = running if reported < 0 else running[:reported]
    stats = {
        ARRIVALS: rate_per_replica,
        QUEUED: queued,
        INTERCEPT: FIT.intercept_s,
        SLOPE: FIT.slope_s,
        MAX_BATCH: FIT.max_batch_size,
        CPUS: 1.0,
    }
    return AutoscalingContext(
        deployment_id=deployment,
        deployment_name=deployment.name,
        app_name=deployment.app_name,
        current_num_replicas=replicas,
        target_num_replicas=replicas if target is None else target,
        running_replicas=running,
        total_num_requests=0.0,
        total_queued_requests=0.0,
        aggregated_metrics={key: {r: value for r in shown} for key, value in stats.items()},
        raw_metrics=raw or {},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=placeable,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=AutoscalingConfig(min_replicas=1, max_replicas=5),
    )


def policy_on(free_cpus: float) -> SloPolicy:
    """The policy on a cluster with `free_cpus` unreserved CPUs."""
    policy = SloPolicy(p95_ms=300)
    policy.free_resources = lambda: {"CPU": free_cpus, "memory": 1e12}
    return policy


def test_serve_policy_reads_the_replicas_reports() -> None:
    policy = policy_on(free_cpus=8)
    replicas, state = policy(context(rate_per_replica=100, replicas=1))
    assert replicas == decide(FIT, 100, 1, SLO_S, 1, 5, 5).replicas > 1
    assert state["predicted_p95_s"] <= 0.8 * SLO_S
    assert state["unmet"] == 0
    # Two replicas, one not reporting yet: it is counted as carrying the same share.
    replicas, state = policy(context(rate_per_replica=100, replicas=2, reported=1))
    assert state["demand_per_s"] == pytest.approx(200)
    # A backlog is demand too: cleared within DRAIN_S.
    _, state = policy(context(rate_per_replica=50, replicas=2, queued=100))
    assert state["demand_per_s"] == pytest.approx(100 + 200 / DRAIN_S)
    # Capped by Serve's target capacity, with the rest reported as unmet.
    replicas, state = policy(context(rate_per_replica=300, replicas=1, placeable=2))
    assert replicas == 2
    assert state["unmet"] > 0


def test_serve_policy_never_asks_for_more_than_free_cpus_hold() -> None:
    # One running replica, one CPU free: two at most, whatever the load.
    replicas, state = policy_on(free_cpus=1.5)(context(rate_per_replica=300, replicas=1))
    assert replicas == 2
    assert state["unmet"] == decide(FIT, 300, 1, SLO_S, 1, 5, 5).replicas - 2
    # Nothing free while a third replica waits to be placed: Serve gets time to start it,
    # then the target drops back to what runs and the rest counts as unmet.
    policy = policy_on(free_cpus=0)
    waiting = {"rate_per_replica": 150, "replicas": 2, "target": 3}
    assert policy(context(**waiting, now=100.0))[0] == 3
    assert policy(context(**waiting, now=100.0 + policy.start_grace_s - 1))[0] == 3
    replicas, state = policy(context(**waiting, now=100.0 + policy.start_grace_s + 1))
    assert replicas == 2
    assert state["unmet"] >= 1


def test_serve_policy_holds_until_replicas_report() -> None:
    replicas, state = policy_on(free_cpus=8)(context(50, replicas=2, reported=0))
    assert replicas == 2
    assert state["predicted_p95_s"] is None


def test_serve_policy_rejects_margins_that_would_flap() -> None:
    with pytest.raises(ValueError, match="scale_down_at"):
        SloPolicy(p95_ms=300, scale_up_at=0.6, scale_down_at=0.8)


def test_replica_report_covers_the_time_since_the_last() -> None:
    batch_time = BatchTimeModel()
    batch_time.observe(1, 0.040)
    batch_time.observe(16, 0.200)
    report = ReplicaReport(since=0.0)
    for ms in range(1, 21):
        report.arrive()
        report.answered(ms / 1000)
    stats = report.report(10.0, 3, batch_time, 32, {"CPU": 1.0})
    assert stats[ARRIVALS] == pytest.approx(2.0)
    assert stats[QUEUED] == 3
    assert stats[MEASURED_P95] == pytest.approx(0.020)
    assert stats[SLOPE] == pytest.approx(0.160 / 15)
    assert stats[INTERCEPT] == pytest.approx(0.040 - 0.160 / 15)
    assert stats[CPUS] == 1.0
    after = report.report(20.0, 0, batch_time, 32, {"CPU": 1.0})
    assert after[ARRIVALS] == 0 and after[MEASURED_P95] == 0 and after[ANSWERED] == 0
    assert stats[ANSWERED] == 20


def test_replica_report_of_one_batch_size_takes_half_as_fixed() -> None:
    batch_time = BatchTimeModel()
    for _ in range(4):
        batch_time.observe(1, 0.040)
    stats = ReplicaReport(since=0.0).report(1.0, 0, batch_time, 32, {})
    assert stats[INTERCEPT] == pytest.approx(0.020) and stats[SLOPE] == pytest.approx(0.020)
    assert INTERCEPT not in ReplicaReport(since=0.0).report(1.0, 0, BatchTimeModel(), 32, {})


def test_policy_reads_each_replicas_newest_sample() -> None:
    """Serve's raw series, not its look-back average: a step shows at the next push."""
    from ray.serve._private.common import TimeStampedValue

    first, second = context(rate_per_replica=10, replicas=2).running_replicas
    series = {
        first: [TimeStampedValue(1.0, 10.0), TimeStampedValue(7.0, 90.0)],
        second: [TimeStampedValue(7.0, 80.0)],
    }
    ctx = context(rate_per_replica=10, replicas=2, raw={ARRIVALS: series})
    assert latest(ctx, ARRIVALS) == {first: 90.0, second: 80.0}
    assert latest(ctx, QUEUED) == {first: 0.0, second: 0.0}  # no series: the averages


def test_an_slo_under_a_lone_requests_latency_does_not_take_every_replica() -> None:
    floor = FIT.p95_s(0)
    tight = 0.5 * floor  # no replica count meets it
    decision = decide(FIT, 10, current=1, slo_s=tight, lowest=1, highest=8, placeable=8)
    assert decision.replicas <= 2
    assert decide(FIT, 10, 1, tight, 1, 8, 8, measured_p95_s=floor).replicas == decision.replicas
    # Under load it still adds what shortens the queue.
    assert decide(FIT, 150, current=1, slo_s=tight, lowest=1, highest=8, placeable=8).replicas > 2


def test_no_arrivals_go_back_to_min_replicas() -> None:
    assert (
        decide(
            FIT, 0, current=4, slo_s=0.5 * FIT.p95_s(0), lowest=1, highest=8, placeable=8
        ).replicas
        == 1
    )


def test_serve_policy_counts_a_measured_p95_only_of_enough_answers() -> None:
    from ray.serve._private.common import TimeStampedValue

    replicas = context(rate_per_replica=20, replicas=2).running_replicas

    def with_measured(answers: float) -> int:
        raw = {
            MEASURED_P95: {r: [TimeStampedValue(1.0, 0.9)] for r in replicas},
            ANSWERED: {r: [TimeStampedValue(1.0, answers)] for r in replicas},
        }
        return policy_on(free_cpus=8)(context(20, replicas=2, raw=raw))[0]

    assert with_measured(MIN_ANSWERS) == 3  # the breach the model missed adds one
    assert with_measured(MIN_ANSWERS - 1) <= 2  # of a handful of answers it is noise
