"""The user's `docker compose up`, end to end: nodes, Serve, the API contract through the real
proxy, healthchecks, scaling, Prometheus scraping, and a clean `down`. Runs in file order."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, SERVE_CONFIG, deployment_of
from tests.e2e.conftest import (
    Stack,
    UserStack,
    deploy_config,
    prometheus_value,
    replica_ids,
    wait_until,
)

pytestmark = pytest.mark.e2e

SUMMARY_INPUT = (
    "Ray Serve is a scalable model serving library for building online inference APIs. "
    "It is framework-agnostic, so one toolkit serves everything from deep learning models to "
    "arbitrary Python business logic, and it scales replicas with traffic."
)


def post(stack: Stack, path: str, body: object) -> requests.Response:
    return requests.post(f"{stack.api}{path}", json=body, timeout=120)


def test_head_and_workers_alive(stack: Stack) -> None:
    nodes = stack.nodes()
    assert sum(n["is_head_node"] for n in nodes) == 1
    assert sum(not n["is_head_node"] for n in nodes) == stack.workers == 2


def test_serve_applications_running(stack: Stack) -> None:
    """The Router's application and one per model, each holding its one deployment."""
    apps = stack.serve_apps()
    assert {name: app["status"] for name, app in apps.items()} == dict.fromkeys(
        ("models", "sentiment", "summarization", "embedding"), "RUNNING"
    )
    assert {name: set(app["deployments"]) for name, app in apps.items()} == {
        "models": {"Router"},
        "sentiment": {"sentiment"},
        "summarization": {"summarization"},
        "embedding": {"embedding"},
    }


# An error or a traceback in any service's log. Warnings are allowed, and so is the one alert
# docs/troubleshooting.md explains: `lb` starts before any node's ingress answers.
ERROR_LINE = re.compile(r"Traceback \(most recent call last\)|\b(ERROR|CRITICAL|FATAL)\b|\[ALERT\]")
EXPLAINED = re.compile(r"\[ALERT\].*backend 'serve' has no server available")


def test_a_first_start_logs_no_error(stack: Stack) -> None:
    """From nothing to RUNNING (plain `docker compose up -d`, then scripts/up.sh): no service
    logged an error or a traceback on the way."""
    assert stack.first_start_logs.strip(), "no logs captured"
    errors = [
        line
        for line in stack.first_start_logs.splitlines()
        if ERROR_LINE.search(line) and not EXPLAINED.search(line)
    ]
    assert not errors, "\n".join(errors[:30])


def test_serve_deploy_ends_its_log_with_where_to_go(stack: Stack) -> None:
    """The last lines of a first `docker compose up`: a banner with the published addresses."""
    logs = stack.run("logs", "--no-color", "serve-deploy").stdout
    assert "READY: every application RUNNING" in logs, logs[-3000:]
    assert f"API            {stack.api}  (POST /predict" in logs, logs[-3000:]
    assert f"Prometheus     {stack.prometheus}" in logs, logs[-3000:]
    assert f"Ray dashboard  {stack.dashboard}" in logs, logs[-3000:]


def test_seed_requests_for_every_model(stack: Stack) -> None:
    resp = post(stack, "/predict", {"model": "sentiment", "text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["label"] in {"POSITIVE", "NEGATIVE"}

    resp = post(stack, "/predict", {"model": "summarization", "text": SUMMARY_INPUT})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "summarization"
    assert isinstance(resp.json()["summary"], str) and resp.json()["summary"]

    resp = post(stack, "/predict", {"model": "embedding", "text": "A cat sits on the mat"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["dim"] == 384

    resp = post(stack, "/classify", {"text": "Ray Serve is great"})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"label", "score"}

    for model in ("sentiment", "embedding"):  # each model's own route, through lb
        resp = post(stack, f"/models/{model}/predict", {"text": "Ray Serve is great"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["model"] == model


def test_ray_healthz_through_proxy(stack: Stack) -> None:
    resp = requests.get(f"{stack.api}/-/healthz", timeout=30)
    assert resp.status_code == 200
    assert requests.get(f"{stack.api}/-/routes", timeout=30).json() == {
        "/": "models",
        "/models/sentiment": "sentiment",
        "/models/summarization": "summarization",
        "/models/embedding": "embedding",
    }


def test_every_node_runs_an_ingress_behind_the_load_balancer(stack: Stack) -> None:
    """proxy_location EveryNode with Serve's HAProxy data path: an HAProxy process on the head
    and on each worker, the `lb` service counts every one of them up (its health checks of
    /-/healthz, scraped by Prometheus), and the Router's two replicas run on two workers."""
    probe = "import node_health; print(node_health.process_running(b'/haproxy'))"
    for container in stack.containers("ray-head") + stack.containers("ray-worker"):
        out = subprocess.run(
            ["docker", "exec", "-w", "/app/images", container, "python3", "-c", probe],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "True", (container, out)
    nodes_up = 'sum(haproxy_server_status{job="lb", proxy="serve", state="UP"})'
    counted = wait_until(lambda: prometheus_value(stack, nodes_up) == 1 + stack.workers, 60)
    assert counted is not None, prometheus_value(stack, nodes_up)
    head = next(n["node_id"] for n in stack.nodes() if n["is_head_node"])
    routers = [
        r["node_id"]
        for r in stack.serve_app()["deployments"]["Router"]["replicas"]
        if r["state"] == "RUNNING"
    ]
    assert len(routers) == 2 and len(set(routers)) == 2 and head not in routers, routers


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/predict", "{not json", 400, "malformed_json"),
        ("/predict", {"model": "nope", "text": "x"}, 404, "unknown_model"),
        ("/predict", {"text": "a" * 70_000}, 413, "body_too_large"),
        ("/predict", {"text": ""}, 422, "invalid_request"),
        ("/predict", {"text": 5}, 422, "invalid_request"),
        ("/classify", {}, 422, "invalid_request"),
    ],
)
def test_error_contract_through_proxy(
    stack: Stack, path: str, body: object, status: int, code: str
) -> None:
    if isinstance(body, str):
        resp = requests.post(f"{stack.api}{path}", data=body, timeout=30)
    else:
        resp = post(stack, path, body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == code


def test_compose_healthchecks_healthy(stack: Stack) -> None:
    for service in ("ray-head", "ray-worker", "prometheus", "ray-targets", "lb", "redis"):
        containers = stack.containers(service)
        assert containers, f"no running {service} container"
        for container in containers:
            health = stack.inspect(container)["State"]["Health"]["Status"]
            assert health == "healthy", (service, health)


def test_image_healthcheck_reports_healthy(stack: Stack) -> None:
    head = stack.containers("ray-head")[0]
    image = stack.inspect(head)["Image"]
    test = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = yaml.safe_load(test)
    assert command[0] == "CMD"
    for container in stack.containers("ray-head") + stack.containers("ray-worker"):
        result = subprocess.run(
            ["docker", "exec", container, *command[1:]], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_model_replicas_not_on_head(stack: Stack) -> None:
    head = next(n["node_id"] for n in stack.nodes() if n["is_head_node"])
    models = ("sentiment", "summarization", "embedding")
    # After an earlier module's roll or restore, a model can be listed a while with no replica.
    wait_until(
        lambda: all(stack.deployments().get(m, {}).get("replicas") for m in models), 120, every_s=2
    )
    deployments = stack.deployments()
    for name in ("sentiment", "summarization", "embedding"):
        replicas = deployments[name]["replicas"]
        assert replicas and all(r["node_id"] != head for r in replicas), (name, replicas)


def test_prometheus_scrapes_every_node(stack: Stack) -> None:
    deadline = time.monotonic() + 90
    up: list = []
    while time.monotonic() < deadline:
        resp = requests.get(
            f"{stack.prometheus}/api/v1/query", params={"query": 'up{job="ray"} == 1'}, timeout=30
        )
        up = resp.json()["data"]["result"]
        if len(up) == 1 + stack.workers:
            return
        time.sleep(5)
    raise AssertionError(f"Prometheus sees {len(up)} Ray nodes up, expected {1 + stack.workers}")


def run_up(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """scripts/up.sh with extra environment, and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "up.sh"), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result, time.monotonic() - started


def test_up_fails_fast_with_the_failing_steps_own_error(stack: Stack) -> None:
    """When serve-deploy (here: given no time to deploy) or the models step (here: given a config
    that does not exist) fails, scripts/up.sh ends as soon as that step exits, with its message,
    not after its own 900 s; the running application is left as it was (the deployer applied
    the config it runs)."""
    replicas = replica_ids(stack)
    result, elapsed = run_up("--timeout", "900", DEPLOY_TIMEOUT_S="0")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "serve-deploy exited with code 1" in output, output[-3000:]
    assert "[serve-deploy] timed out" in output, output[-3000:]  # serve-deploy's own words
    assert elapsed < 180, f"up.sh took {elapsed:.0f} s to report a failed deploy"

    result, elapsed = run_up("--timeout", "900", SERVE_CONFIG="serve/missing.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "cannot read the Serve config serve/missing.yaml" in output, output[-3000:]
    assert elapsed < 180, f"up.sh took {elapsed:.0f} s to report a failed model fetch"
    assert stack.serve_status() == "RUNNING"
    for name, ids in replica_ids(stack).items():  # none replaced (autoscaling may drop some)
        assert ids <= replicas[name], f"{name}: {ids - replicas[name]} started by the failed up.sh"


def test_up_waits_for_the_current_config_over_an_older_running_one(
    stack: Stack, tmp_path: Path
) -> None:
    """An application RUNNING an older config (as the head restores it from Redis after `down`
    without `-v`) is not ready: up.sh returns once a starting serve-deploy applied
    serve/serve_config.yaml. The secrets survive the `secrets` service running again."""

    def wait_s() -> float:
        deployed = {"applications": [stack.serve_app("sentiment")["deployed_app_config"]]}
        return deployment_of(deployed, "sentiment")["user_config"]["batch_wait_timeout_s"]

    current = deployment_of(yaml.safe_load(SERVE_CONFIG.read_text()), "sentiment")
    older = yaml.safe_load(SERVE_CONFIG.read_text())
    deployment_of(older, "sentiment")["user_config"]["batch_wait_timeout_s"] += 0.01
    stack.run("stop", "serve-deploy")  # as after `down`: the next deployer starts afresh
    deploy_config(stack, older, tmp_path / "older.yaml")
    assert wait_s() != current["user_config"]["batch_wait_timeout_s"]
    token = stack.token

    result, _ = run_up()
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert stack.serve_status() == "RUNNING"
    assert wait_s() == current["user_config"]["batch_wait_timeout_s"]
    assert stack.secret("ray_auth_token") == token


def test_locust_compose_service_runs_the_configured_shape_headless(stack: Stack) -> None:
    """The optional `locust` service (profile `load`), as compose defines it, reaches the head by
    service name and follows LOCUST_SHAPE, headless for LOCUST_RUN_TIME (Locust's own variables,
    set in .env); Locust exits non-zero on any failed request."""
    settings = {
        "LOCUST_SHAPE": "step",
        "LOCUST_HEADLESS": "true",
        "LOCUST_RUN_TIME": "15s",
        "LOCUST_EXPORTER_PORT": "0",
    }
    env_args = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
    result = stack.run(
        "--profile", "load", "run", "--rm", "--no-deps", *env_args, "locust",
        check=False,
        timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # StepUpDownShape starts at base_users (2), not at LOCUST_USERS (1): the shape drives it.
    assert "Shape test updating to 2 users" in output, output[-3000:]
    assert "Aggregated" in output


def test_locust_service_stops_cleanly(stack: Stack) -> None:
    """`docker compose stop locust` ends Locust with its own shutdown (stop_signal SIGINT), not
    with Docker's kill after the grace period."""
    stack.run("--profile", "load", "up", "-d", "--no-deps", "locust")
    try:
        (container,) = stack.containers("locust")
        time.sleep(10)  # Locust is up and serving its web UI
        started = time.monotonic()
        stack.run("--profile", "load", "stop", "-t", "30", "locust")
        stopped_s = time.monotonic() - started
        state = stack.inspect(container)["State"]
        logs = subprocess.run(
            ["docker", "logs", container], capture_output=True, text=True, check=True
        )
        assert state["ExitCode"] == 0, (state, (logs.stdout + logs.stderr)[-2000:])
        assert "Shutting down" in logs.stdout + logs.stderr
        assert stopped_s < 30, f"stop took {stopped_s:.0f} s: Locust ignored the stop signal"
    finally:
        stack.run("--profile", "load", "rm", "-f", "-s", "locust", check=False)


def test_scale_adds_a_worker_that_takes_replicas(stack: Stack, tmp_path: Path) -> None:
    """`--scale ray-worker=3` adds a node that joins, takes replicas and is scraped. The stack is
    put back as configured afterwards (scripts/up.sh): later tests count on its workers and config.
    """
    try:
        original = {n["node_id"] for n in stack.nodes() if not n["is_head_node"]}
        stack.run("up", "-d", "--no-recreate", "--scale", "ray-worker=3", "ray-worker")
        deadline = time.monotonic() + 180
        joined: set[str] = set()
        # A node that joined since (`original` may still hold a recreated worker's old node, which
        # Ray counts ALIVE until its heartbeats time out).
        while time.monotonic() < deadline:
            joined = {n["node_id"] for n in stack.nodes() if not n["is_head_node"]} - original
            if joined:
                break
            time.sleep(3)
        assert len(joined) == 1, f"the third worker did not join: {joined}"
        (new_node,) = joined

        # Ask for more CPUs than two workers offer (2 + 1 + 3 = 6 > 4): the new node must host some.
        config = yaml.safe_load(SERVE_CONFIG.read_text())
        deployment_of(config, "sentiment")["autoscaling_config"]["min_replicas"] = 2
        deployment_of(config, "embedding")["autoscaling_config"]["min_replicas"] = 3
        deploy_config(stack, config, tmp_path / "serve_config.yaml")
        deadline = time.monotonic() + 300
        on_new_node: list[str] = []
        while time.monotonic() < deadline:
            deployments = stack.deployments()
            on_new_node = [
                name
                for name, d in deployments.items()
                for r in d["replicas"]
                if r["state"] == "RUNNING" and r["node_id"] == new_node
            ]
            if stack.serve_status() == "RUNNING" and on_new_node:
                break
            time.sleep(3)
        assert on_new_node, "no replica was placed on the new worker"
        resp = post(stack, "/predict", {"model": "embedding", "text": "still serving"})
        assert resp.status_code == 200, resp.text
        stack.wait_for_ray_targets(4)  # Prometheus found the new node by itself
    finally:
        subprocess.run([str(ROOT / "scripts" / "up.sh")], cwd=ROOT, check=True, timeout=900)


@pytest.mark.last
def test_down_removes_everything(stack: Stack) -> None:
    subprocess.run([str(ROOT / "scripts" / "down.sh")], cwd=ROOT, check=True)
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("container", "network", "volume"):
        listed = subprocess.run(
            [
                "docker",
                kind,
                "ls",
                *(["-a"] if kind == "container" else []),
                "-q",
                "--filter",
                label,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert listed == [], f"{kind}s left behind: {listed}"


@pytest.mark.last
def test_a_stack_started_by_hand_outlives_the_tier(user_stack: UserStack) -> None:
    """The tier ran under a project, ports and images of its own: what ran under the user's
    project before it (their stack, or the one the session started there) still runs, with
    every volume it had."""
    running_now = UserStack.listed("container", user_stack.project)
    assert user_stack.containers and set(user_stack.containers) <= set(running_now), running_now
    volumes_now = UserStack.listed("volume", user_stack.project)
    assert set(user_stack.volumes) <= set(volumes_now), volumes_now
