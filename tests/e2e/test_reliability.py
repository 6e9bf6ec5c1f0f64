"""Reliability on the compose stack: a crashed worker node, an unhealthy replica, overload and a
timeout lose no request that the client could not retry, and a crashed head comes back with the
same cluster and application. Each test prints the figures it measured.

The module deploys one override for all of them, as an operator would with `serve deploy`: two
sentiment replicas (one per worker, so one survives a worker), fault injection on, and a timeout no
embedding request can meet. The shipped config is deployed again afterwards.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.conftest import SERVE_CONFIG
from tests.e2e.conftest import (
    Stack,
    deploy_config,
    locust_totals,
    prometheus_value,
    start_locust,
    wait_until,
)

pytestmark = pytest.mark.e2e

JOBS = Path(__file__).parent / "jobs"
APP = "models"
# A crashed worker's replicas run again within this many seconds. Measured on 2 shared cores:
# 14 s until Ray declares the node dead (5 missed 3 s health checks; the restarted node can only
# register then) plus 45-60 s to start the lost replicas (import torch, load weights) on cores
# that also serve the load, so 72-75 s; the limit catches a regression, not that figure.
RESTORE_LIMIT_S = 120


def deployments(stack: Stack) -> dict:
    return stack.serve_app(APP)["deployments"]


def app_status(stack: Stack) -> str:
    return stack.serve_app(APP)["status"]


def running(stack: Stack, name: str) -> dict[str, str]:
    """Replica id -> node id of the RUNNING replicas of `name`."""
    return {
        r["replica_id"]: r["node_id"]
        for r in deployments(stack)[name]["replicas"]
        if r["state"] == "RUNNING"
    }


def router_retries(stack: Stack) -> float:
    return prometheus_value(stack, "sum(ray_router_retries_total)")


@pytest.fixture(scope="module")
def faulty(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The override: two sentiment replicas on two workers, fault injection, a hasty embedding."""
    tmp = tmp_path_factory.mktemp("reliability")
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    app = config["applications"][0]
    app["runtime_env"]["env_vars"]["SERVE_APP_FAULT_INJECTION"] = "1"
    app["args"]["models"]["embedding"]["timeout_s"] = 0.001
    for deployment in app["deployments"]:
        if deployment["name"] == "sentiment":
            deployment["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    deploy_config(stack, config, tmp / "override.yaml")
    ready = wait_until(
        lambda: (
            app_status(stack) == "RUNNING" and len(set(running(stack, "sentiment").values())) == 2
        ),
        300,
        every_s=3,
    )
    assert ready is not None, (
        f"override not RUNNING with 2 sentiment replicas: {deployments(stack)}"
    )
    try:
        yield
    finally:
        deploy_config(stack, shipped, tmp / "shipped.yaml")
        wait_until(lambda: app_status(stack) == "RUNNING", 300, every_s=3)


def test_worker_crash_under_load_loses_no_request(
    stack: Stack, faulty: None, tmp_path: Path
) -> None:
    """Kill -9 a worker node that hosts a sentiment replica while Locust sends sentiment traffic."""
    csv = tmp_path / "crash"
    locust = start_locust(
        stack, csv, "SentimentUser", "-u", "8", "-r", "8", "-t", "300s", "--exporter-port", "0"
    )
    try:
        time.sleep(15)  # requests in flight on both replicas
        victim_node = next(iter(running(stack, "sentiment").values()))
        victim_ip = next(n["node_ip"] for n in stack.nodes() if n["node_id"] == victim_node)
        container = next(
            c
            for c in stack.containers("ray-worker")
            if any(
                net["IPAddress"] == victim_ip
                for net in stack.inspect(c)["NetworkSettings"]["Networks"].values()
            )
        )
        before = stack.inspect(container)
        retries_before = router_retries(stack)
        wanted = {name: len(d["replicas"]) for name, d in deployments(stack).items()}

        # A crash, not a stop: `docker kill` counts as a manual stop and the restart policy
        # would not apply. Killing the container's init from the host is what an OOM kill or a
        # crash of the node's main process looks like to Docker.
        crashed_at = time.monotonic()
        os.kill(before["State"]["Pid"], signal.SIGKILL)

        def rejoined() -> bool:
            now = stack.inspect(container)
            workers = [n for n in stack.nodes() if not n["is_head_node"]]
            return (
                now["RestartCount"] > before["RestartCount"]
                and now["State"]["Running"]
                and len(workers) == stack.workers
                and victim_node not in {n["node_id"] for n in workers}
            )

        assert wait_until(rejoined, 120) is not None, (
            "the crashed worker did not restart and rejoin"
        )
        rejoined_s = time.monotonic() - crashed_at

        # Seconds after the crash at which each deployment again had all its replicas RUNNING.
        restored_at: dict[str, float] = {}

        def restored() -> bool:
            for name, d in deployments(stack).items():
                up = sum(
                    r["state"] == "RUNNING" and r["node_id"] != victim_node for r in d["replicas"]
                )
                if name not in restored_at and up >= wanted[name] and d["status"] == "HEALTHY":
                    restored_at[name] = time.monotonic() - crashed_at
            return len(restored_at) == len(wanted)

        assert wait_until(restored, 240) is not None, f"replicas not restored: {deployments(stack)}"
        restored_s = max(restored_at.values())
        time.sleep(10)  # the restored replicas serve under load
    finally:
        locust.send_signal(signal.SIGINT)  # Locust stops its users and writes its stats
        output, _ = locust.communicate(timeout=120)

    time.sleep(20)  # the Router's counter reaches Prometheus (scraped every 15 s)
    retried = router_retries(stack) - retries_before
    sent, failed, rows = locust_totals(csv)
    print(
        f"\nworker crash: requests {sent}, failed {failed}, retried by the Router {retried:.0f}, "
        f"node rejoined after {rejoined_s:.0f} s, replicas restored after {restored_s:.0f} s "
        f"({', '.join(f'{name} {t:.0f} s' for name, t in sorted(restored_at.items()))})"
    )
    assert sent > 0 and failed == 0, "\n".join(rows) + output[-3000:]
    assert restored_s <= RESTORE_LIMIT_S, f"replicas restored after {restored_s:.0f} s"


def test_unhealthy_replica_is_replaced_under_load(
    stack: Stack, faulty: None, tmp_path: Path
) -> None:
    before = running(stack, "sentiment")
    assert len(before) == 2, before
    csv = tmp_path / "unhealthy"
    locust = start_locust(
        stack, csv, "SentimentUser", "-u", "8", "-r", "8", "-t", "300s", "--exporter-port", "0"
    )
    try:
        time.sleep(5)
        client = JobSubmissionClient(stack.dashboard, headers=stack.auth)
        job = client.submit_job(
            entrypoint="python fail_health_check.py", runtime_env={"working_dir": str(JOBS)}
        )
        finished = wait_until(
            lambda: (
                client.get_job_status(job)
                in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
            ),
            120,
        )
        logs = client.get_job_logs(job)
        assert finished is not None and client.get_job_status(job) == JobStatus.SUCCEEDED, logs
        victim = next(
            line.split("=", 1)[1] for line in logs.splitlines() if line.startswith("VICTIM=")
        )
        assert victim in before, (victim, before)
        injected_at = time.monotonic()

        def replaced() -> bool:
            now = running(stack, "sentiment")
            return victim not in now and len(now) == 2

        assert wait_until(replaced, 180) is not None, (
            f"{victim} not replaced: {running(stack, 'sentiment')}"
        )
        replaced_s = time.monotonic() - injected_at
        time.sleep(5)
    finally:
        locust.send_signal(signal.SIGINT)
        output, _ = locust.communicate(timeout=120)

    sent, failed, rows = locust_totals(csv)
    print(
        f"\nunhealthy replica: requests {sent}, failed {failed}, replaced after {replaced_s:.0f} s"
    )
    assert sent > 0 and failed == 0, "\n".join(rows) + output[-3000:]


def test_overload_answers_503_with_retry_after_quickly(stack: Stack, faulty: None) -> None:
    """More concurrent requests than sentiment admits (2 replicas x 64 + 32 queued in the Router):
    the excess is refused at once with 503 + Retry-After, and no request waits past its timeout."""
    timeout_s = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["args"][
        "inference_timeout_s"
    ]
    burst = 320
    text = "An overloaded endpoint should say so at once. " * 4

    def post(_: int) -> tuple[int, float, str | None]:
        started = time.monotonic()
        resp = requests.post(
            f"{stack.api}/predict", json={"model": "sentiment", "text": text}, timeout=120
        )
        return resp.status_code, time.monotonic() - started, resp.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=burst) as pool:
        results = list(pool.map(post, range(burst)))
    by_status = {
        status: sorted(t for s, t, _ in results if s == status)
        for status in {s for s, _, _ in results}
    }
    rejected, served = by_status.get(503, []), by_status.get(200, [])
    print(
        f"\noverload: {burst} concurrent -> "
        + ", ".join(
            f"{len(times)} x {status} (median {statistics.median(times):.2f} s)"
            for status, times in sorted(by_status.items())
        )
        + f", slowest {max(t for _, t, _ in results):.1f} s"
    )
    assert rejected and served, by_status.keys()
    # 504 is the bounded answer for a queued request that outlives its timeout.
    assert set(by_status) <= {200, 503, 504}, by_status.keys()
    assert all(h is not None and int(h) >= 1 for s, _, h in results if s == 503)
    assert statistics.median(rejected) < statistics.median(served) / 2, "503s are not quick"
    assert max(t for _, t, _ in results) < timeout_s + 10, "a request waited past its timeout"


def test_request_over_its_timeout_answers_504(stack: Stack, faulty: None) -> None:
    started = time.monotonic()
    resp = requests.post(
        f"{stack.api}/predict", json={"model": "embedding", "text": "too slow"}, timeout=60
    )
    elapsed = time.monotonic() - started
    print(f"\ntimeout: {resp.status_code} after {elapsed * 1000:.0f} ms")
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"] == "timeout"


def test_head_restart_recovers_cluster_and_app_without_redeploy(stack: Stack, faulty: None) -> None:
    """Kill -9 the head: with the GCS's state in Redis, the restarted head takes back the same
    workers and the Serve application; measures how long the API did not answer."""
    app_before = stack.serve_app(APP)
    workers_before = {n["node_id"] for n in stack.nodes() if not n["is_head_node"]}
    head = stack.containers("ray-head")[0]
    before = stack.inspect(head)

    probes: list[tuple[float, bool]] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                ok = (
                    requests.post(
                        f"{stack.api}/predict",
                        json={"model": "sentiment", "text": "still there?"},
                        timeout=5,
                    ).status_code
                    == 200
                )
            except requests.RequestException:
                ok = False
            probes.append((time.monotonic(), ok))
            time.sleep(0.25)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        time.sleep(3)
        crashed_at = time.monotonic()
        os.kill(before["State"]["Pid"], signal.SIGKILL)

        def back() -> bool:
            now = stack.inspect(head)
            return (
                now["RestartCount"] > before["RestartCount"]
                and app_status(stack) == "RUNNING"
                and bool(probes)
                and probes[-1][1]
                and probes[-1][0] > crashed_at
            )

        recovered = wait_until(back, 300)
        time.sleep(3)
    finally:
        stop.set()
        prober.join(timeout=10)

    assert recovered is not None, (
        f"the API did not come back after the head restarted: {probes[-5:]}"
    )
    failed = [t for t, ok in probes if not ok and t >= crashed_at]
    downtime = (max(failed) - crashed_at) if failed else 0.0
    app_after = stack.serve_app(APP)
    workers_after = {n["node_id"] for n in stack.nodes() if not n["is_head_node"]}
    print(
        f"\nhead restart: API unavailable for {downtime:.1f} s ({len(failed)} of "
        f"{sum(t >= crashed_at for t, _ in probes)} probes failed), workers kept: "
        f"{len(workers_before & workers_after)} of {len(workers_before)}"
    )
    # Recovered from the GCS's state in Redis, not deployed again.
    assert app_after["last_deployed_time_s"] == app_before["last_deployed_time_s"]
    assert workers_after == workers_before, "workers were replaced instead of reconnecting"
