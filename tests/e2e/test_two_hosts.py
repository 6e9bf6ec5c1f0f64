"""Two hosts on one machine: a Ray worker on "host B" joins the stack on "host A", serves, is
scraped, and is lost under load without a failed request.

The hosts are two addresses on a veth link in the root network namespace (host A: HOST_A, where
the e2e stack's head publishes its cluster ports through compose.cluster.yaml from its first
start; host B: HOST_B, where the remote worker publishes its own through compose.worker.yaml, run
as a compose project of its own with its own bridge network). Docker isolates the two bridge
networks from each other, so the only way between the hosts' containers is through ports
published on those addresses: the port table.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, SERVE_CONFIG, deployment_of
from tests.e2e.conftest import (
    HOST_A,
    HOST_B,
    Stack,
    deploy_config,
    prometheus_value,
    running,
    sentiment_load,
    wait_until,
)

pytestmark = pytest.mark.e2e

REMOTE_PROJECT = "ray-serve-cluster-host-b"
# A port the head listens on that the port table keeps to the node itself (the dashboard agent's
# HTTP side): not published, so host B cannot reach it.
UNPUBLISHED_HEAD_PORT = 6383


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


@dataclass
class Remote:
    container: str
    node_id: str

    def run(self, code: str) -> subprocess.CompletedProcess[str]:
        """Python inside the remote worker's container (host B's side)."""
        return sh("docker", "exec", self.container, "python3", "-c", code, check=False)


def token_file(stack: Stack) -> Path:
    """Host B's copy of the cluster's token, readable by uid 1000 alone (compose.worker.yaml)."""
    path = ROOT / "build" / "host-b" / "ray_auth_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(stack.token)
    os.chown(path, 1000, 1000)
    path.chmod(0o400)
    return path


def remote_compose(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """compose.worker.yaml as host B's own project, with host B's .env settings."""
    env = {
        **os.environ,
        "RAY_CLUSTER_ADDRESS": HOST_A,
        "RAY_NODE_ADDRESS": HOST_B,
        "RAY_AUTH_TOKEN_FILE": str(token_file(stack)),
    }
    env.pop("COMPOSE_FILE", None)
    return subprocess.run(
        [*stack.compose, "-p", REMOTE_PROJECT, "-f", "compose.worker.yaml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def remote(stack: Stack) -> Iterator[Remote]:
    """compose.worker.yaml on host B, joined to the cluster."""
    if os.environ.get("RAY_CLUSTER_ADDRESS") != HOST_A:
        pytest.skip("needs root to add the two hosts' addresses (ip link); CI runs as root")
    up = remote_compose(stack, "up", "-d")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        joined = wait_until(
            lambda: any(n["node_ip"] == HOST_B for n in stack.nodes()), 180, every_s=3
        )
        assert joined is not None, (
            "the remote worker did not join: "
            + remote_compose(stack, "logs", "--tail", "60").stdout[-4000:]
        )
        (container,) = sh(
            "docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={REMOTE_PROJECT}",
            "--filter", "label=com.docker.compose.service=ray-worker",
        ).stdout.split()  # fmt: skip
        node_id = next(n["node_id"] for n in stack.nodes() if n["node_ip"] == HOST_B)
        yield Remote(container, node_id)
    finally:
        remote_compose(stack, "down", "-v")


def replicas_on(stack: Stack, name: str, node_id: str) -> list[str]:
    return [replica for replica, node in running(stack, name).items() if node == node_id]


@pytest.fixture(scope="module")
def spread(
    stack: Stack, remote: Remote, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Three sentiment replicas, at most one per node: host B, the one node sure to have room
    (host A's workers may not, e.g. after earlier faults), holds one of them."""
    tmp = tmp_path_factory.mktemp("two-hosts")
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    sentiment = deployment_of(config, "sentiment")
    sentiment["autoscaling_config"].update(min_replicas=3, max_replicas=3)
    sentiment["max_replicas_per_node"] = 1
    deploy_config(stack, config, tmp / "spread.yaml")

    def placed() -> bool:
        here = set(running(stack, "sentiment").values())
        return remote.node_id in here and len(here) >= 2

    try:
        assert wait_until(placed, 300, every_s=3) is not None, (
            f"no sentiment replica on both hosts: {stack.deployments()['sentiment']}"
        )
        yield
    finally:
        # One replica first: the shipped config alone would keep waiting for the replicas it
        # cannot place once host B is gone, until the autoscaler scales down.
        sentiment["autoscaling_config"].update(min_replicas=1, max_replicas=1)
        deploy_config(stack, config, tmp / "one.yaml")
        wait_until(lambda: stack.serve_status() == "RUNNING", 300, every_s=3)
        deploy_config(stack, yaml.safe_load(SERVE_CONFIG.read_text()), tmp / "shipped.yaml")
        wait_until(lambda: stack.serve_status() == "RUNNING", 300, every_s=3)


def remote_requests(stack: Stack) -> float:
    """Requests the replicas on host B have finished, as Prometheus scraped them from there."""
    return prometheus_value(
        stack,
        f'sum(ray_serve_deployment_request_counter_total{{job="ray",instance="{HOST_B}:8080"}})',
    )


def test_remote_worker_joins_serves_and_is_scraped(
    stack: Stack, remote: Remote, spread: None
) -> None:
    """Host B's worker is a node of the cluster at its own address, holds a sentiment replica
    that answers requests sent to host A's API (both routes), and Prometheus on host A scrapes
    its metrics through the ray-targets file, under the `ray` job like the local nodes."""
    scraped = wait_until(
        lambda: prometheus_value(stack, f'up{{job="ray",instance="{HOST_B}:8080"}}') == 1, 90
    )
    assert scraped is not None, f"Prometheus does not scrape {HOST_B}:8080: {stack.ray_targets()}"
    # The node panels of Ray's dashboards select nodes by `instance`, host B's among them.
    node_series = f'count(ray_node_cpu_utilization{{job="ray",instance="{HOST_B}:8080"}})'
    assert wait_until(lambda: prometheus_value(stack, node_series) > 0, 60) is not None

    # Root only long enough to put HOST_B on the container's loopback: Ray runs as `ray`.
    ray_start = remote.run("print(open('/proc/1/status').read())").stdout
    assert "Uid:\t1000\t1000" in ray_start, ray_start

    before = remote_requests(stack)
    for i in range(60):
        path = "/classify" if i % 2 else "/models/sentiment/predict"
        resp = requests.post(f"{stack.api}{path}", json={"text": f"two hosts {i}"}, timeout=30)
        assert resp.status_code == 200, resp.text
    served = wait_until(lambda: remote_requests(stack) > before, 60, every_s=2)
    print(f"\nhost B served {remote_requests(stack) - before:.0f} of 60 requests")
    assert served is not None, "no request reached the replica on host B"


def test_only_the_port_table_joins_the_hosts(stack: Stack, remote: Remote, spread: None) -> None:
    """Host B reaches host A through the published table ports only: the head's GCS answers on
    HOST_A, a port the head listens on but does not publish does not, nor does the head's own
    container address. Everything the other tests see working went through the table."""
    (head,) = stack.containers("ray-head")
    head_ip = next(iter(stack.addresses(head)))

    def reachable(host: str, port: int) -> bool:
        probe = remote.run(
            f"import socket; socket.create_connection(({host!r}, {port}), timeout=3).close()"
        )
        return probe.returncode == 0

    assert reachable(HOST_A, 6379), "host B cannot reach the head's GCS through the table"
    assert not reachable(HOST_A, UNPUBLISHED_HEAD_PORT), "a port outside the table is published"
    assert not reachable(head_ip, 6379), "host B reaches the head's container address directly"
    # The head does listen on that port (for its own node): the check above is not vacuous.
    inside = sh(
        "docker", "exec", head, "python3", "-c",
        f"import socket; socket.create_connection(('127.0.0.1', {UNPUBLISHED_HEAD_PORT}), 3)",
        check=False,
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr


def test_the_head_wants_the_token_from_host_b(stack: Stack, remote: Remote) -> None:
    """Token authentication holds across hosts: from host B, the head's GCS answers a health
    check with the cluster's token and refuses one with another token; the worker joined with
    the token from its file secret."""

    def health_check(token: str) -> subprocess.CompletedProcess[str]:
        return sh(
            "docker", "exec", "--user", "1000", "--env", f"RAY_AUTH_TOKEN={token}",
            "--env", "RAY_AUTH_TOKEN_PATH=",  # this token, not the worker's file
            remote.container, "ray", "health-check", "--address", "ray-head:6379",
            check=False,
        )  # fmt: skip

    assert health_check(stack.token).returncode == 0
    refused = health_check("0" * 64)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    # The worker itself read the token from its file secret: it is not in its environment.
    env = stack.inspect(remote.container)["Config"]["Env"]
    assert not [e for e in env if e.startswith("RAY_AUTH_TOKEN=")], env
    assert "RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token" in env


def test_losing_host_b_under_load_loses_no_request(
    stack: Stack, remote: Remote, spread: None, tmp_path: Path
) -> None:
    """SIGKILL host B's worker while Locust sends sentiment traffic through host A's API: the
    Routers resend what its replica held to the replicas on host A; no request fails."""
    before = remote_requests(stack)
    retries = prometheus_value(stack, "sum(ray_router_retries_total)")
    # 24 users keep every replica busy, so host B's holds requests the moment it dies (with
    # the default 8, its replica was now and then between requests, and there was nothing to
    # resend).
    with sentiment_load(stack, tmp_path / "host-b", users=24) as load:
        busy = wait_until(lambda: remote_requests(stack) > before, 30)
        assert busy is not None, "host B's replica took no part in the load"
        assert replicas_on(stack, "sentiment", remote.node_id), stack.deployments()["sentiment"]
        sh("docker", "kill", "--signal", "KILL", remote.container)
        lost = wait_until(
            lambda: (
                all(n["node_id"] != remote.node_id for n in stack.nodes())
                and not replicas_on(stack, "sentiment", remote.node_id)
            ),
            120,
            every_s=2,
        )
        time.sleep(10)  # the remaining replicas carry the load on their own
    sent, failed, rows = load.totals()

    def retried() -> float:
        return prometheus_value(stack, "sum(ray_router_retries_total)") - retries

    # A Router's counters reach Prometheus through its node's metrics agent (reported every 10 s)
    # and a scrape (5 s); on this loaded 2-core machine, allow a few of each.
    wait_until(lambda: retried() >= 1, 45)
    print(
        f"\nhost B lost: requests {sent}, failed {failed}, "
        f"Ray saw it gone after {lost and round(lost)} s, Router retries {retried():.0f}"
    )
    assert lost is not None, "Ray still counts host B's node or replica as alive"
    assert sent > 0 and failed == 0, "\n".join(rows) + load.output[-3000:]
    assert retried() >= 1, "host B's replica held requests, yet the Router retried none"
