"""roll.sh's helper finds a container's Ray node by the address the node advertises."""

from __future__ import annotations

from tests.conftest import ROOT, load_script

roll_nodes = load_script(ROOT / "scripts" / "roll_nodes.py")

NODES = [
    {"node_id": "head", "node_ip": "ray-head", "start_time_ms": 1},  # compose.cluster.yaml
    {"node_id": "old", "node_ip": "172.18.0.5", "start_time_ms": 1},
    {"node_id": "new", "node_ip": "172.18.0.5", "start_time_ms": 2},  # the address reused
]


def container(*ips: str) -> object:
    return roll_nodes.Container("id", "name", "running", "healthy", 0, set(ips))


def test_a_node_is_found_by_address_the_newest_first() -> None:
    assert roll_nodes.node_of(container("172.18.0.5", "1a2b3c4d5e6f"), NODES)["node_id"] == "new"


def test_a_head_advertising_its_name_is_found_by_host_name() -> None:
    assert roll_nodes.node_of(container("172.18.0.2", "ray-head"), NODES)["node_id"] == "head"
    assert roll_nodes.node_of(container("172.18.0.9", "9f8e7d6c5b4a"), NODES) is None


def details(**deployments: tuple[int, list[tuple[str, str]]]) -> dict:
    """Serve's details: per deployment, its target and its replicas as (node, state)."""
    return {
        "applications": {
            name: {
                "deployments": {
                    name: {
                        "target_num_replicas": target,
                        "replicas": [{"node_id": n, "state": st} for n, st in replicas],
                    }
                }
            }
            for name, (target, replicas) in deployments.items()
        }
    }


def test_a_migration_names_the_target_that_took_the_room() -> None:
    """The replacement node's room went to a replica the autoscaler added: the wait says so."""
    now = details(
        sentiment=(3, [("a", "RUNNING"), ("b", "RUNNING"), ("new", "RUNNING")]),
        embedding=(1, [("old", "PENDING_MIGRATION")]),
    )
    m = roll_nodes.migration(now, "old", {"sentiment/sentiment": 2, "embedding/embedding": 1})
    assert m.below == ["embedding/embedding 0/1 RUNNING"]
    assert m.grown == ["sentiment/sentiment 2 -> 3"]
    assert "sentiment/sentiment 2 -> 3" in m.hint()


def test_no_hint_when_nothing_waits_for_room() -> None:
    now = details(sentiment=(3, [("a", "RUNNING"), ("b", "RUNNING"), ("new", "RUNNING")]))
    m = roll_nodes.migration(now, "old", {"sentiment/sentiment": 2})
    assert m.grown and not m.below and m.hint() == ""
