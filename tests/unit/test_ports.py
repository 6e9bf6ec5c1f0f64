"""The port table (docs/beyond-one-host.md) is what the Ray nodes are started with and what
the head (compose.cluster.yaml) and a remote worker (compose.worker.yaml) publish."""

from __future__ import annotations

import re

import pytest
import yaml

from images import ray_targets
from tests.conftest import ROOT

FLAG = re.compile(r"--((?:[a-z-]+-)?port)=(\d+)")


def port_table() -> list[dict[str, str]]:
    """The table's rows: port (a number or a range), set_by, open."""
    text = (ROOT / "docs" / "beyond-one-host.md").read_text()
    section = text[text.index("### Port table") :]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"\d+(-\d+)?", cells[0]):
            rows.append({"port": cells[0], "set_by": cells[2], "open": cells[3]})
    return rows


def compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def node_commands() -> dict[str, str]:
    """The `ray start` command of each kind of node, as one string."""
    services = compose("compose.yaml")["services"]
    head = services["ray-head"]["command"]
    return {
        "head": head if isinstance(head, str) else head[-1],
        "worker": services["ray-worker"]["command"],
        "remote": compose("compose.worker.yaml")["services"]["ray-worker"]["command"],
    }


def flag_ports(command: str) -> dict[str, str]:
    """`--x-port=N` flags as {flag: "N"}, the worker-port pair folded into one range."""
    flags = {f"--{name}": value for name, value in FLAG.findall(command)}
    if "--min-worker-port" in flags:
        low, high = flags.pop("--min-worker-port"), flags.pop("--max-worker-port")
        flags["--min-worker-port"] = f"{low}-{high}"
    return flags


def table_flags() -> dict[str, str]:
    """The table's rows set by a `ray start` flag, as {flag: port}."""
    return {
        re.search(r"`(--[a-z-]+)`", row["set_by"])[1]: row["port"]
        for row in port_table()
        if row["set_by"].startswith("`--")
    }


def published(service: dict) -> set[str]:
    """Ports a service publishes (`address:host:container`), each on the same port number on the
    host: Ray advertises the port it listens on, so other hosts must find it there."""
    ports = set()
    for entry in service.get("ports", []):
        host, container = str(entry).rsplit(":", 2)[1:]
        assert host == container, f"{entry}: published on another port number"
        ports.add(container)
    return ports


def test_the_table_is_found() -> None:
    assert len(port_table()) >= 10


@pytest.mark.parametrize("node", ["head", "worker", "remote"])
def test_every_ray_port_flag_matches_the_table(node: str) -> None:
    flags = flag_ports(node_commands()[node])
    table = table_flags()
    assert flags.items() <= table.items(), f"{node}: flags outside the table or differing: {flags}"
    head_only = {"--port", "--dashboard-port"}
    missing = set(table) - set(flags) - (head_only if node != "head" else set())
    assert not missing, f"{node} starts without pinning {missing}"


def test_the_head_publishes_what_the_table_opens_to_it() -> None:
    head = compose("compose.cluster.yaml")["services"]["ray-head"]
    wanted = {r["port"] for r in port_table() if r["open"] in ("to the head", "to every node")}
    assert published(head) == wanted
    assert all(str(entry).startswith("${RAY_CLUSTER_ADDRESS") for entry in head["ports"]), (
        "a cluster port published on an address other than RAY_CLUSTER_ADDRESS"
    )


def test_a_remote_worker_publishes_what_the_table_opens_to_it() -> None:
    remote = compose("compose.worker.yaml")["services"]["ray-worker"]
    wanted = {
        r["port"] for r in port_table() if r["open"] in ("to every node", "to remote workers")
    }
    assert published(remote) == wanted
    assert all(str(entry).startswith("${RAY_NODE_ADDRESS}:") for entry in remote["ports"])


def test_serve_port_ranges_match_the_table() -> None:
    rows = {row["set_by"].split()[0].strip("`,"): row["port"] for row in port_table()}
    remote = compose("compose.worker.yaml")["services"]["ray-worker"]
    low, high = remote["sysctls"]["net.ipv4.ip_local_port_range"].split()
    assert rows["net.ipv4.ip_local_port_range"] == f"{low}-{high}"
    local_env = compose("compose.yaml")["x-ray-node"]["environment"]
    for env in (local_env, remote["environment"]):
        ingress = (
            f"{env['RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT']}"
            f"-{env['RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT']}"
        )
        assert rows["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == ingress


def test_a_remote_worker_runs_serve_as_the_head_s_host_does() -> None:
    """The settings every node of one cluster must share (Serve's data path, its retries, the GCS
    reconnect timeout, the replica port range) are the same on a remote worker."""
    local_env = compose("compose.yaml")["x-ray-node"]["environment"]
    remote_env = compose("compose.worker.yaml")["services"]["ray-worker"]["environment"]
    shared = [key for key in local_env if key.startswith(("RAY_SERVE_", "RAY_gcs_"))]
    assert shared
    assert {key: remote_env.get(key) for key in shared} == {key: local_env[key] for key in shared}
    assert (
        compose("compose.worker.yaml")["services"]["ray-worker"]["env_file"]
        == compose("compose.yaml")["x-ray-node"]["env_file"]
    )


def test_ray_targets_looks_for_what_a_remote_worker_is_started_with() -> None:
    """The label and metrics port ray-targets lists remote workers by are those that
    compose.worker.yaml starts them with."""
    command = node_commands()["remote"]
    assert f" --labels={ray_targets.LABEL[0]}={ray_targets.LABEL[1]} " in f" {command} "
    assert flag_ports(command)["--metrics-export-port"] == str(ray_targets.METRICS_PORT)
    assert "--port" not in compose("compose.yaml")["services"]["ray-targets"]["command"]
