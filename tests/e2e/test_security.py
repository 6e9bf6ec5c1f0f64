"""Secure defaults of the running stack, probed from this host through 127.0.0.1 only."""

from __future__ import annotations

import socket
import subprocess

import pytest
import requests

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

INTERNAL_PORTS = {
    6379: "GCS / Redis",
    8080: "metrics",
    44217: "autoscaler metrics",
    44227: "dashboard metrics",
}
PUBLISHED = {8000, 8265, 9090, 3000, 8089}  # API, Ray dashboard, Prometheus, Grafana, Locust UI


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


def test_internal_ports_are_not_reachable_from_the_host(stack: Stack) -> None:
    for port, what in INTERNAL_PORTS.items():
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"{what} ({port}) is published"


def test_published_ports_bind_to_loopback_only(stack: Stack) -> None:
    published = set()
    for container in stack.containers():
        ports = stack.inspect(container)["NetworkSettings"]["Ports"] or {}
        for inner, bindings in ports.items():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", (container, inner, binding)
                published.add(int(inner.split("/")[0]))
    assert published and published <= PUBLISHED, published


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
    """Even from inside the network (a Ray node), the GCS's store wants REDIS_PASSWORD."""
    probe = (
        "import socket; s = socket.create_connection(('redis', 6379), timeout=5); "
        "s.sendall(b'PING\\r\\n'); print(s.recv(200).decode())"
    )
    head = stack.containers("ray-head")[0]
    reply = subprocess.run(
        ["docker", "exec", head, "python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert reply.startswith("-NOAUTH"), reply
