"""Least privilege in every container, read from `docker compose config` of each way the stack
is started (plain, air-gapped, opened to other hosts, a remote worker): what compose will run,
anchors and overlays resolved."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, compose_command

# Each way of starting, as compose files plus the settings they require.
CLUSTER = {"RAY_CLUSTER_ADDRESS": "10.0.0.5"}
STARTS = {
    "plain": (["compose.yaml"], {}),
    "air-gapped": (["compose.yaml", "compose.airgap.yaml"], {}),
    "cluster": (["compose.yaml", "compose.cluster.yaml"], CLUSTER),
    "remote worker": (["compose.worker.yaml"], {**CLUSTER, "RAY_NODE_ADDRESS": "10.0.0.7"}),
}
# Root only where a service cannot do its job otherwise, with the capabilities that job takes:
# the one-shot that hands each secret to its reader, and the remote worker that puts its host's
# address on its own loopback before it becomes `ray` (images/advertise.py).
ROOT_SERVICES = {
    ("compose.yaml", "secrets"): {"CHOWN", "DAC_READ_SEARCH"},
    ("compose.worker.yaml", "ray-worker"): {"NET_ADMIN", "SETUID", "SETGID"},
}
# Services whose image writes only to their volumes (and a tmpfs): a read-only root filesystem.
READ_ONLY = {
    "secrets", "serve-deploy", "locust", "lb", "redis", "ray-targets", "prometheus", "alertmanager"
}  # fmt: skip


def config(files: list[str], env: dict[str, str], tmp: Path, env_file: str = "") -> dict:
    compose = compose_command()
    if not compose:
        pytest.skip("no docker compose here; .ci/run installs it")
    given = tmp / "given.env"  # the checkout's .env, if any, left out
    given.write_text(env_file)
    args = [*compose, "--env-file", str(given), "-p", "hardening"]
    for name in files:
        args += ["-f", str(ROOT / name)]
    result = subprocess.run(
        [*args, "--profile", "load", "config"] if "compose.yaml" in files else [*args, "config"],
        cwd=ROOT,
        # No settings from this shell, but HOME: a Compose v2 plugin may live under ~/.docker.
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


@pytest.fixture(scope="module", params=list(STARTS))
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    files, env = STARTS[request.param]
    found = config(files, env, tmp_path_factory.mktemp("compose"))
    return {(files[0], name): service for name, service in found.items()}


def uid(user: str) -> int:
    return int(str(user).split(":")[0])


def test_every_service_drops_all_capabilities_and_new_privileges(services: dict) -> None:
    for key, service in services.items():
        assert service.get("cap_drop") == ["ALL"], key
        assert "no-new-privileges:true" in service.get("security_opt", []), key
        added = set(service.get("cap_add", []))
        assert added == ROOT_SERVICES.get(key, set()), (key, added)


def test_every_service_runs_as_a_named_non_root_user(services: dict) -> None:
    for key, service in services.items():
        assert "user" in service, f"{key}: no user set (the image's default is not checked)"
        if key in ROOT_SERVICES:
            assert uid(service["user"]) == 0, key
        else:
            assert uid(service["user"]) != 0, (key, service["user"])


def test_every_long_running_service_has_memory_and_pids_limits(services: dict) -> None:
    for key, service in services.items():
        if service.get("restart", "no") == "no":
            continue  # a one-shot step: done before the stack serves
        assert service.get("mem_limit"), f"{key}: no mem_limit"
        assert int(service.get("pids_limit", 0)) > 0, f"{key}: no pids_limit"


def test_read_only_root_filesystem_where_the_image_allows(services: dict) -> None:
    for (_, name), service in services.items():
        assert bool(service.get("read_only")) == (name in READ_ONLY), name


def test_a_hung_lb_is_killed_by_its_own_healthcheck(services: dict) -> None:
    """Compose never restarts an unhealthy container: lb's healthcheck kills a HAProxy that stopped
    answering, which needs Docker's init as PID 1 (the kill spares it), and a restart policy."""
    lbs = [service for (_, name), service in services.items() if name == "lb"]
    # No lb only in a remote worker's own compose file.
    assert lbs or {first for first, _ in services} == {"compose.worker.yaml"}, list(services)
    for lb in lbs:
        assert lb.get("init") is True, lb
        assert "kill -KILL -1" in lb["healthcheck"]["test"][-1], lb["healthcheck"]
        assert lb["restart"] == "unless-stopped"


def test_the_remote_worker_reads_its_token_from_a_file_secret(tmp_path: Path) -> None:
    files, env = STARTS["remote worker"]
    worker = config(files, env, tmp_path)["ray-worker"]
    assert "RAY_AUTH_TOKEN" not in worker["environment"]
    assert worker["environment"]["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
    assert [s["source"] for s in worker["secrets"]] == ["ray_auth_token"]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.worker.yaml"])
def test_every_added_capability_is_named_in_a_comment(name: str) -> None:
    """cap_add lines say why: each capability a service adds is named in the comments of its
    service above that line."""
    text = (ROOT / name).read_text()
    for match in re.finditer(r"cap_add: \[([A-Z_, ]+)\]", text):
        above = text[: match.start()].splitlines()
        service = max(i for i, line in enumerate(above) if re.match(r"  [a-z-]+:$", line))
        comments = " ".join(line for line in above[service:] if line.strip().startswith("#"))
        for cap in match[1].replace(" ", "").split(","):
            assert cap in comments, f"{name}: {cap} is added without a comment naming it"


def test_grafana_may_be_framed_only_by_itself_and_the_ray_dashboard(tmp_path: Path) -> None:
    """Embedding stays on for the Ray dashboard's Metrics tab, and a Content-Security-Policy
    names the only pages that may frame Grafana; no other directive (Grafana's own pages keep
    their scripts)."""
    files, env = STARTS["plain"]
    grafana = config(files, env, tmp_path)["grafana"]["environment"]
    assert grafana["GF_SECURITY_ALLOW_EMBEDDING"] == "true"
    assert grafana["GF_SECURITY_CONTENT_SECURITY_POLICY"] == "true"
    policy = grafana["GF_SECURITY_CONTENT_SECURITY_POLICY_TEMPLATE"]
    assert policy == "frame-ancestors 'self' http://127.0.0.1:8265 http://localhost:8265;"
    # .env.example's value is the default, written so that both Compose v2 and 1.x read it whole.
    example = (ROOT / ".env.example").read_text()
    grafana = config(files, {**env}, tmp_path, env_file=example)["grafana"]["environment"]
    assert grafana["GF_SECURITY_CONTENT_SECURITY_POLICY_TEMPLATE"] == policy
