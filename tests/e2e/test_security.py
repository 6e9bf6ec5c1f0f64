"""Secure defaults of the running stack, probed from this host through 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
import requests

from tests.e2e.conftest import E2E_ENV, SECRET_KEYS, Stack, wait_until

pytestmark = pytest.mark.e2e

INTERNAL_PORTS = {
    6379: "GCS / Redis",
    8080: "metrics",
    44217: "autoscaler metrics",
    44227: "dashboard metrics",
    8404: "load balancer metrics",
}
# The .env settings of the operators' ports, which BIND_ADDRESS holds (API_BIND_ADDRESS: the API).
OPERATOR_PORTS = (
    "RAY_DASHBOARD_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT", "LOCUST_PORT"
)  # fmt: skip
# API, Ray dashboard, Prometheus, Alertmanager, Grafana, Locust UI
PUBLISHED = {8000, 8265, 9090, 9093, 3000, 8089}
# The head's cluster ports (compose.cluster.yaml, docs/beyond-one-host.md): GCS, node manager,
# object manager, and the workers' range.
CLUSTER_TABLE = {6379, 6380, 6381, *range(10002, 10042)}


def test_secrets_generated_inside_the_stack(stack: Stack) -> None:
    """The stack came up with no secrets given (blank in the environment, whatever .env holds):
    compose handed the `secrets` service none, and it made them."""
    (container,) = stack.containers("secrets", exited=True)
    handed = dict(e.split("=", 1) for e in stack.inspect(container)["Config"]["Env"])
    assert {key: handed[key] for key in SECRET_KEYS} == dict.fromkeys(SECRET_KEYS, "")
    assert len(stack.token) == 64 and int(stack.token, 16), "no generated Ray token"
    assert len(stack.secret("redis_password")) == 48


def test_no_secret_in_any_container_command_or_environment(stack: Stack) -> None:
    """Not in `docker inspect`'s Cmd/Args/Entrypoint/healthcheck of any container, nor in the
    environment of any but the one-shot `secrets` service (where only .env values would go)."""
    secrets = {"token": stack.token, "redis password": stack.secret("redis_password")}
    containers = stack.containers(exited=True)
    assert len(containers) >= 7, containers  # secrets, models, redis, head, 2 workers, ...
    for container in containers:
        info = stack.inspect(container)
        config = info["Config"]
        exposed = [info["Path"], *info["Args"], *(config.get("Cmd") or [])]
        exposed += [
            *(config.get("Entrypoint") or []),
            *((config.get("Healthcheck") or {}).get("Test") or []),
        ]
        if config["Labels"].get("com.docker.compose.service") != "secrets":
            exposed += config.get("Env") or []
        for what, value in secrets.items():
            leaks = [part for part in exposed if value in part]
            assert not leaks, f"{what} visible in {info['Name']}: {leaks}"


def test_ray_jobs_api_refuses_requests_without_the_token(stack: Stack) -> None:
    anonymous = requests.get(f"{stack.dashboard}/api/jobs/", timeout=30)
    assert anonymous.status_code in (401, 403), anonymous.text[:300]
    submit = requests.post(
        f"{stack.dashboard}/api/jobs/", json={"entrypoint": "echo not allowed"}, timeout=30
    )
    assert submit.status_code in (401, 403), submit.text[:300]
    wrong = requests.get(
        f"{stack.dashboard}/api/jobs/", headers={"Authorization": "Bearer wrong"}, timeout=30
    )
    assert wrong.status_code in (401, 403), wrong.text[:300]
    assert requests.get(f"{stack.dashboard}/api/jobs/", headers=stack.auth, timeout=30).ok


def test_prometheus_lifecycle_api_is_off(stack: Stack) -> None:
    """Whoever reaches Prometheus's port can read, not stop or reload it."""
    for action in ("quit", "reload"):
        resp = requests.post(f"{stack.prometheus}/-/{action}", timeout=30)
        assert resp.status_code == 403, (action, resp.status_code, resp.text[:200])
    assert requests.get(f"{stack.prometheus}/-/ready", timeout=30).ok


def test_internal_ports_are_not_reachable_from_the_host(stack: Stack) -> None:
    for port, what in INTERNAL_PORTS.items():
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"{what} ({port}) is published"


def test_published_ports_bind_to_loopback_only(stack: Stack) -> None:
    """Loopback only; with compose.cluster.yaml (the e2e stack opens to host B), the head's
    cluster port table also on RAY_CLUSTER_ADDRESS, and nothing else there."""
    published, cluster = set(), set()
    heads = stack.containers("ray-head")
    for container in stack.containers():
        ports = stack.inspect(container)["NetworkSettings"]["Ports"] or {}
        for inner, bindings in ports.items():
            for binding in bindings or []:
                port = int(inner.split("/")[0])
                if binding["HostIp"] == os.environ.get("RAY_CLUSTER_ADDRESS"):
                    assert container in heads, (container, inner)
                    cluster.add(port)
                    continue
                assert binding["HostIp"] == "127.0.0.1", (container, inner, binding)
                published.add(port)
    assert published and published <= PUBLISHED, published
    assert cluster <= CLUSTER_TABLE, cluster - CLUSTER_TABLE


def test_ray_containers_run_as_non_root(stack: Stack) -> None:
    for service in ("ray-head", "ray-worker"):
        for container in stack.containers(service):
            uid = subprocess.run(
                ["docker", "exec", container, "id", "-u"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert uid != "0", f"{service} container {container} runs as root"


def test_redis_refuses_clients_without_the_password(stack: Stack) -> None:
    """Even from inside the network (a Ray node), the GCS's store wants the generated password."""
    head = stack.containers("ray-head")[0]

    def redis_reply(commands: str) -> str:
        probe = (
            "import socket; s = socket.create_connection(('redis', 6379), timeout=5); "
            f"s.sendall({commands!r}.encode()); print(s.recv(200).decode())"
        )
        return subprocess.run(
            ["docker", "exec", head, "python3", "-c", probe],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    reply = redis_reply("PING\r\n")
    assert reply.startswith("-NOAUTH"), reply
    reply = redis_reply(f"AUTH default {stack.secret('redis_password')}\r\nPING\r\n")
    assert reply.startswith("+OK"), reply


# Probes the host's ports from a container on Docker's default bridge: another network namespace,
# which reaches the host at the bridge's gateway address, never at its 127.0.0.1.
OUTSIDE_PROBE = """
import json, socket, sys, urllib.request
host, api, others = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
def open_(port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False
health = urllib.request.urlopen(f"http://{host}:{api}/-/healthz", timeout=10).status
print(json.dumps({"api": health, "open": [p for p in others if open_(p)]}))
"""


def lb_health(stack: Stack) -> str:
    (lb,) = stack.containers("lb")
    return stack.inspect(lb)["State"]["Health"]["Status"]


def test_api_bind_address_publishes_the_api_alone(stack: Stack) -> None:
    """API_BIND_ADDRESS=0.0.0.0: from another network namespace, the API answers and the
    operators' ports (Ray dashboard, Prometheus, Alertmanager, Grafana, Locust UI) stay closed."""
    operator_ports = [int(E2E_ENV[key]) for key in OPERATOR_PORTS]
    gateway = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (head,) = stack.containers("ray-head")
    image = stack.inspect(head)["Config"]["Image"]
    os.environ["API_BIND_ADDRESS"] = "0.0.0.0"  # published on every interface: the point here
    try:
        stack.run("up", "-d", "--no-deps", "lb")
        probe = subprocess.run(
            ["docker", "run", "--rm", "--network", "bridge", "--user", "1000", image,
             "python3", "-c", OUTSIDE_PROBE, gateway, E2E_ENV["API_PORT"],
             *map(str, operator_ports)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        del os.environ["API_BIND_ADDRESS"]
        stack.run("up", "-d", "--no-deps", "lb")
        # Healthy again before the modules after this one (test_stack checks every healthcheck).
        wait_until(lambda: lb_health(stack) == "healthy", 60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen == {"api": 200, "open": []}, seen
    # The operators' ports do answer on this host's loopback: the closed ones above are not vacuous.
    assert requests.get(f"{stack.prometheus}/-/ready", timeout=10).status_code == 200
    wait_until(lambda: stack.serve_status() == "RUNNING", 60)
