"""Changing a running cluster under Locust load through the load balancer: a config edit and a
code edit applied with scripts/up.sh, canaries promoted and rolled back by the deployer on
Prometheus's figures, and Serve's state lost with Redis. Each loses no request it should not,
restarts only what it must, and asserts its figures.

The edits are made to the checkout's own files (as a user would) and always put back.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, SERVE_CONFIG
from tests.e2e.conftest import (
    FiringAlerts,
    Stack,
    host_gateway,
    prometheus_value,
    replica_ids,
    run_job,
    running,
    sentiment_load,
    wait_until,
)

pytestmark = pytest.mark.e2e

NODES = ("ray-head", "ray-worker")
# Locust users for config and code changes: enough that sentiment asks for more replicas than
# the default cluster places, the case where a surge rollout alone never moves (serve/rollout.py).
FULL_CLUSTER_USERS = 8
# For canaries: few enough that sentiment keeps one replica and the canary's replica has the
# default cluster's spare CPU (a canary needs room for its replicas).
CANARY_USERS = 2
# A canary's interval here (the shipped default is 60 s).
INTERVAL_S = 15
# Serve applies the config again by itself within this after Redis lost its data.
REDIS_LOSS_LIMIT_S = 120
# scripts/up.sh, under load, for one model's config edit (measured 80 s: one surge replica and
# the rollout's two applies) and for a code edit (142 s: every application rolls, the Router's
# two replicas one after the other), with headroom for a shared machine.
CONFIG_UP_LIMIT_S = 160
CODE_UP_LIMIT_S = 260


def node_containers(stack: Stack) -> set[str]:
    return {c for service in NODES for c in stack.containers(service)}


def settled(stack: Stack) -> bool:
    """Every application RUNNING, every deployment HEALTHY, every replica RUNNING (an earlier
    module's restore or downscale is over)."""
    deployments = stack.deployments()
    return stack.serve_status() == "RUNNING" and all(
        d["status"] == "HEALTHY" and all(r["state"] == "RUNNING" for r in d["replicas"])
        for d in deployments.values()
    )


@contextmanager
def edited(path: Path, change) -> Iterator[None]:
    original = path.read_text()
    path.write_text(change(original))
    try:
        yield
    finally:
        path.write_text(original)


def up(stack: Stack) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "up.sh")], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return time.monotonic() - started


class MinRunning:
    """Samples the RUNNING replicas of one deployment every second in a thread."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack, self.name, self.samples = stack, name, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with suppress(requests.RequestException, KeyError):
                self.samples.append(len(running(self.stack, self.name)))
            self._stop.wait(1)

    def __enter__(self) -> MinRunning:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_config_change_restarts_only_that_model(stack: Stack, tmp_path: Path) -> None:
    """One model's spec changes (its replicas roll, with surge) and another's user_config (live,
    no restart), applied with scripts/up.sh under load: no request fails, no node is recreated,
    and every other application keeps its replica ids."""
    assert wait_until(lambda: settled(stack), 180, every_s=2) is not None, stack.deployments()
    nodes, before = node_containers(stack), replica_ids(stack)

    def change(text: str) -> str:
        text = text.replace("max_input_tokens: 512", "max_input_tokens: 500", 1)
        return text.replace("max_batch_size: 16", "max_batch_size: 8", 1)  # embedding's

    with (
        edited(SERVE_CONFIG, change),
        sentiment_load(stack, tmp_path / "config", FULL_CLUSTER_USERS) as load,
        MinRunning(stack, "sentiment") as sentiment,
    ):
        seconds = up(stack)
        assert wait_until(lambda: running(stack, "sentiment").keys() != before["sentiment"], 120)
        time.sleep(5)
    requests_, failures, rows = load.totals()
    after = replica_ids(stack)
    print(
        f"\n[changes] config edit: {requests_} requests, {failures} failed, up.sh {seconds:.0f} s"
    )
    assert requests_ > 0 and failures == 0, rows
    assert seconds <= CONFIG_UP_LIMIT_S, f"up.sh took {seconds:.0f} s"
    assert node_containers(stack) == nodes
    assert not after["sentiment"] & before["sentiment"], "sentiment's replicas were not replaced"
    for name in ("Router", "summarization", "embedding"):
        assert after[name] == before[name], f"{name} restarted: {before[name]} -> {after[name]}"
    assert min(sentiment.samples) >= 1, f"sentiment had no RUNNING replica: {sentiment.samples}"
    models = {
        m["name"]: m for m in requests.get(f"{stack.api}/models", timeout=30).json()["models"]
    }
    assert models["embedding"]["batching"]["max_batch_size"] == 8  # live, same replicas


def canary_config(tmp: Path, version: str, stable: dict | None = None, **canary) -> Path:
    """The shipped config with a sentiment canary (fault injection on), and `stable` as the
    stable spec when an earlier test promoted one."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    app = next(a for a in config["applications"] if a["name"] == "sentiment")
    app["runtime_env"] = copy.deepcopy(app["runtime_env"])
    app["runtime_env"]["env_vars"]["SERVE_APP_FAULT_INJECTION"] = "1"
    spec = dict(stable or app["args"]["spec"])
    spec["canary"] = {
        "version": version,
        "steps": [25, 100],
        "interval_s": INTERVAL_S,
        "min_requests": 10,
        "max_p95_ratio": 4.0,
        "ready_timeout_s": 240,
        **canary,
    }
    app["args"]["spec"] = spec
    path = tmp / f"canary-{version}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prepare_models(stack: Stack, config: Path) -> None:
    """The models step for `config`, as compose runs it (root: CI's model folder is root's)."""
    subprocess.run(
        [*stack.compose, "run", "--rm", "--no-deps", "--user", "0:0",
         "-v", f"{config}:/tmp/canary.yaml:ro", "models",
         "python3", "scripts/fetch_models.py", "--config", "/tmp/canary.yaml", "--dest", "/models"],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )  # fmt: skip


@contextmanager
def deployer(stack: Stack, config: Path, log: Path) -> Iterator[subprocess.Popen]:
    """scripts/deploy.py run by hand on this machine for `config`, its metrics scraped by
    Prometheus through the host gateway."""
    env = {**os.environ, "RAY_AUTH_TOKEN": stack.token, "RAY_AUTH_MODE": "token"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "deploy.py"), "--config", str(config),
             "--address", stack.dashboard, "--prometheus", stack.prometheus,
             "--metrics-port", "9647", "--metrics-host", host_gateway(stack)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            print(log.read_text()[-4000:])


def timeline(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "canary sentiment" in line]


def test_good_canary_is_promoted(stack: Stack, tmp_path: Path) -> None:
    # The same weights as stable: only noise can fail it. On this shared 2-core machine one
    # answer queued behind another application's batch puts the p95 of an interval's ~10 canary
    # answers into Serve's 2-5 s histogram bucket (a rollback at 3650 ms vs 675 ms was seen), so
    # the p95 bound is wide here; the rollback on p95 is unit-tested (tests/unit/test_rollout.py).
    config = canary_config(tmp_path, "2", source="/models/sentiment", max_p95_ratio=10.0)
    prepare_models(stack, config)
    log = tmp_path / "deploy.log"
    with (
        sentiment_load(stack, tmp_path / "good", CANARY_USERS) as load,
        deployer(stack, config, log) as proc,
    ):
        assert wait_until(lambda: proc.poll() is not None, 600, every_s=3) is not None
        shares = prometheus_value(
            stack,
            'max(max_over_time(rollout_canary_share_percent{model="sentiment",version="2"}[10m]))',
        )
    requests_, failures, rows = load.totals()
    print(f"\n[changes] good canary: {requests_} requests, {failures} failed", *timeline(log))
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert requests_ > 0 and failures == 0, rows
    assert shares == 100
    models = {
        m["name"]: m for m in requests.get(f"{stack.api}/models", timeout=30).json()["models"]
    }
    assert models["sentiment"]["version"] == "2" and models["sentiment"]["canary"] is None
    assert "sentiment-canary" not in stack.serve_apps()
    assert any("25 -> 100" in line for line in timeline(log))


def test_bad_canary_is_rolled_back(stack: Stack, tmp_path: Path) -> None:
    """A canary whose batches fail: rolled back within an interval of its first failures, with
    failures bounded by its share of the requests in that time, and the alert fires."""
    stable = dict(next(a for a in stack_config(stack) if a["name"] == "sentiment")["args"]["spec"])
    config = canary_config(
        tmp_path, "3", stable=stable, source="/models/sentiment", steps=[50, 100]
    )
    prepare_models(stack, config)
    log = tmp_path / "deploy.log"
    load_started = time.monotonic()
    with (
        FiringAlerts(stack) as alerts,
        sentiment_load(stack, tmp_path / "bad", CANARY_USERS) as load,
        deployer(stack, config, log) as proc,
    ):
        assert wait_until(lambda: "at 50 %" in log.read_text(), 300, every_s=2) is not None
        injected = time.monotonic()
        run_job(stack, "python inject_fault.py fail_next_batches sentiment-canary 100000", 120)
        # Rolled back once no request goes to the canary (its application's removal follows).
        assert wait_until(lambda: "share 0 %" in log.read_text(), 300, every_s=1) is not None
        rolled_back_s = time.monotonic() - injected
        assert wait_until(lambda: proc.poll() is not None, 300, every_s=2) is not None
        fired = alerts.wait_for("CanaryRolledBack", 60, model="sentiment")
    requests_, failures, rows = load.totals()
    rate = requests_ / (time.monotonic() - load_started)
    print(
        f"\n[changes] bad canary: {requests_} requests, {failures} failed, rolled back "
        f"{rolled_back_s:.0f} s after the fault",
        *timeline(log),
    )
    assert proc.returncode == 3, log.read_text()[-3000:]
    assert rolled_back_s <= 2 * INTERVAL_S + 20
    # share x rate x the time the canary served failures, with headroom.
    bound = 0.5 * rate * rolled_back_s * 1.5 + 5
    assert 0 < failures <= bound, (failures, bound, rows)
    assert fired, alerts.seen
    models = {
        m["name"]: m for m in requests.get(f"{stack.api}/models", timeout=30).json()["models"]
    }
    assert models["sentiment"]["version"] == stable.get("version")
    assert "sentiment-canary" not in stack.serve_apps()


def test_broken_canary_is_rolled_back_without_failures(stack: Stack, tmp_path: Path) -> None:
    """A canary whose weights cannot load never gets traffic: rolled back, no request fails."""
    stable = dict(next(a for a in stack_config(stack) if a["name"] == "sentiment")["args"]["spec"])
    config = canary_config(tmp_path, "broken", stable=stable, ready_timeout_s=90)
    subprocess.run(
        [*stack.compose, "run", "--rm", "--no-deps", "--user", "0:0", "--entrypoint", "sh",
         "models", "-c",
         "mkdir -p /models/sentiment@broken && cp /models/sentiment/config.json "
         "/models/sentiment@broken/ && head -c 4096 /dev/urandom "
         "> /models/sentiment@broken/model.safetensors"],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    log = tmp_path / "deploy.log"
    with (
        sentiment_load(stack, tmp_path / "broken", CANARY_USERS) as load,
        deployer(stack, config, log) as proc,
    ):
        assert wait_until(lambda: proc.poll() is not None, 400, every_s=3) is not None
    requests_, failures, rows = load.totals()
    print(f"\n[changes] broken canary: {requests_} requests, {failures} failed", *timeline(log))
    assert proc.returncode == 3, log.read_text()[-3000:]
    assert re.search(r"ROLLBACK: its application is not RUNNING", log.read_text())
    assert requests_ > 0 and failures == 0, rows
    assert "sentiment-canary" not in stack.serve_apps()


# Last: the cluster keeps the edited code (a comment) afterwards, and putting the original back
# out rolls every application again. The next up.sh does that (test_roll's, which runs next).
@pytest.mark.last
def test_code_change_rolls_replicas_not_nodes(stack: Stack, tmp_path: Path) -> None:
    """An edit under serve/ reaches the cluster as a new code package through scripts/up.sh:
    every application rolls, no node container is recreated, no request fails."""
    nodes, uri, before = node_containers(stack), stack.code_uri(), replica_ids(stack)
    with (
        edited(ROOT / "serve" / "errors.py", lambda t: t + "\n# A code change.\n"),
        sentiment_load(stack, tmp_path / "code", FULL_CLUSTER_USERS) as load,
    ):
        seconds = up(stack)
        time.sleep(5)
    requests_, failures, rows = load.totals()
    print(f"\n[changes] code edit: {requests_} requests, {failures} failed, up.sh {seconds:.0f} s")
    assert requests_ > 0 and failures == 0, rows
    assert seconds <= CODE_UP_LIMIT_S, f"up.sh took {seconds:.0f} s"
    assert node_containers(stack) == nodes
    assert stack.code_uri() != uri
    after = replica_ids(stack)
    for name, ids in after.items():
        assert not ids & before[name], f"{name} kept replicas of the old code: {ids}"


def stack_config(stack: Stack) -> list[dict]:
    return [app["deployed_app_config"] for app in stack.serve_apps().values()]


def test_serve_redeployed_after_redis_loss(stack: Stack) -> None:
    """Redis's volume wiped with the head: the deployer applies the config again by itself."""
    (redis,) = stack.containers("redis")
    volume = next(
        m["Name"] for m in stack.inspect(redis)["Mounts"] if m.get("Destination") == "/data"
    )
    stack.run("stop", "ray-head", "redis")
    stack.run("rm", "-f", "redis")
    subprocess.run(["docker", "volume", "rm", volume], check=True, capture_output=True)
    started = time.monotonic()
    stack.run("up", "-d", "--no-deps", "redis", "ray-head")

    def serving() -> bool:
        apps = stack.serve_apps()
        ok = len(apps) == 4 and all(a["status"] == "RUNNING" for a in apps.values())
        resp = requests.post(f"{stack.api}/predict", json={"text": "back"}, timeout=10)
        return ok and resp.status_code == 200

    took = wait_until(serving, 600, every_s=2)
    print(f"\n[changes] Redis loss: serving again {took} s after the head restarted")
    if took is None:  # leave a serving stack to the modules that follow
        up(stack)
    assert took is not None and took <= REDIS_LOSS_LIMIT_S, took
    assert time.monotonic() - started >= took
