"""The deployer's pure parts (serve/rollout.py): what it deploys for a canary and how it judges
one, on the shipped config."""

from __future__ import annotations

import copy

import pytest
import yaml

from serve.check_config import check_config
from serve.config import CanaryRoute, CanarySpec, RolloutRecord, RouterUserConfig
from serve.rollout import (
    Figures,
    canaries,
    judge,
    next_share,
    queries,
    render,
    rollout_phases,
)
from tests.conftest import SERVE_CONFIG


def shipped() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def with_canary(**canary) -> dict:
    config = shipped()
    app = next(a for a in config["applications"] if a["name"] == "sentiment")
    app["args"]["spec"]["canary"] = {"version": "2", **canary}
    return config


def app(config: dict, name: str) -> dict:
    return next(a for a in config["applications"] if a["name"] == name)


def test_declaring_a_canary_changes_no_deployed_application() -> None:
    """The stable applications are deployed exactly as without the block: nothing restarts."""
    plain = render(shipped(), RouterUserConfig())
    declared = render(with_canary(source="/models/sentiment"), RouterUserConfig())
    assert declared == plain
    check_config(declared)


def test_canary_application_serves_the_new_version_beside_stable() -> None:
    config = with_canary(source="/elsewhere", revision="abc")
    out = render(config, RouterUserConfig(), {"sentiment"}, "gcs://_ray_pkg_x.zip")
    check_config(out)
    canary = app(out, "sentiment-canary")
    assert canary["route_prefix"] == "/models/sentiment-canary"
    assert canary["args"]["spec"]["version"] == "2"
    assert canary["args"]["spec"]["source"] == "/elsewhere"
    assert canary["args"]["spec"]["revision"] == "abc"
    assert "canary" not in canary["args"]["spec"]
    assert canary["deployments"] == app(out, "sentiment")["deployments"]
    for application in out["applications"]:
        assert application["runtime_env"]["py_modules"] == ["gcs://_ray_pkg_x.zip"]
    assert app(out, "sentiment")["args"]["spec"]["version"] == "1"


def test_router_user_config_carries_the_rollout_state() -> None:
    state = RouterUserConfig(canaries={"sentiment": CanaryRoute(version="2", share=25)})
    out = render(with_canary(), state, {"sentiment"})
    (router,) = app(out, "models")["deployments"]
    assert router["user_config"]["canaries"] == {"sentiment": {"version": "2", "share": 25.0}}


def test_promoted_canary_is_the_stable_spec_until_the_file_says_so() -> None:
    state = RouterUserConfig(rollouts={"sentiment": RolloutRecord(version="2", outcome="promoted")})
    out = render(with_canary(source="/new"), state)
    spec = app(out, "sentiment")["args"]["spec"]
    assert (spec["version"], spec["source"]) == ("2", "/new")
    rolled_back = RouterUserConfig(
        rollouts={"sentiment": RolloutRecord(version="2", outcome="rolled_back")}
    )
    assert app(render(with_canary(), rolled_back), "sentiment")["args"]["spec"]["version"] == "1"


def held(config: dict, name: str) -> tuple[int, int]:
    (deployment,) = app(config, name)["deployments"]
    return deployment["autoscaling_config"]["max_replicas"], deployment.get(
        "max_surge_percent", 100
    )


def test_a_rollout_replaces_one_model_at_a_time_holding_its_replicas() -> None:
    """Each model whose replicas the change replaces gets a phase of its own, every model held
    at what runs; a model with one replica surges, and on a full cluster the model with the most
    replicas gives up one for that phase. Lightweight changes need no phase."""
    before = render(shipped(), RouterUserConfig())
    deployed = {a["name"]: a for a in before["applications"]}
    after = copy.deepcopy(before)
    app(after, "sentiment")["args"]["spec"]["max_input_tokens"] = 500
    app(after, "summarization")["args"]["spec"]["max_input_tokens"] = 900
    app(after, "embedding")["deployments"][0]["user_config"]["max_batch_size"] = 8
    running = {"sentiment": 2, "summarization": 1, "embedding": 1}
    *phases, last = rollout_phases(after, deployed, running, total_cpus=4)
    assert last == after
    assert len(phases) == 2
    first, second = phases
    assert app(first, "sentiment")["args"] == app(after, "sentiment")["args"]
    assert held(first, "sentiment") == (2, 0)  # rolls one at a time, one stays ready
    assert app(first, "summarization")["args"] == app(before, "summarization")["args"]
    assert held(first, "summarization")[0] == 1
    assert app(second, "summarization")["args"] == app(after, "summarization")["args"]
    assert held(second, "summarization") == (1, 100)  # one replica: a surge ...
    assert held(second, "sentiment")[0] == 1  # ... with room made on a full cluster
    assert held(second, "embedding")[0] == 1
    roomy = rollout_phases(after, deployed, running, total_cpus=6)
    assert held(roomy[1], "sentiment")[0] == 2
    lightweight = copy.deepcopy(before)
    app(lightweight, "embedding")["deployments"][0]["user_config"]["max_batch_size"] = 8
    assert rollout_phases(lightweight, deployed, {"embedding": 2}, 4) == [lightweight]


SPEC = CanarySpec(version="2", min_requests=20, max_error_ratio_increase=0.01, max_p95_ratio=1.5)


@pytest.mark.parametrize(
    ("figures", "decision"),
    [
        (Figures(5, 0.5, 0.0, 900, 100), "hold"),  # too few answers to judge
        (Figures(100, 0.0, 0.0, 120, 100), "step"),
        (Figures(100, 0.02, 0.0, 100, 100), "rollback"),  # error ratio
        (Figures(100, 0.05, 0.045, 100, 100), "step"),  # within the allowed increase
        (Figures(100, 0.0, 0.0, 200, 100), "rollback"),  # p95
        (Figures(100, None, None, None, None), "step"),  # no 5xx at all, no latency yet
    ],
)
def test_judge(figures: Figures, decision: str) -> None:
    assert judge(SPEC, figures).decision == decision


def test_steps_and_queries() -> None:
    assert [next_share(SPEC, s) for s in (0, 10, 25, 50, 100)] == [10, 25, 50, 100, None]
    (canary,) = canaries(with_canary()).values()
    exprs = queries(canary, 15)
    assert 'version="2"' in exprs["canary_requests"] and "[15s]" in exprs["canary_requests"]
    assert 'application="sentiment-canary"' in exprs["canary_p95_ms"]
    assert 'version="1",code=~"5.."' in exprs["stable_error_ratio"]


def test_canary_config_is_checked() -> None:
    config = with_canary(steps=[50, 25, 100])
    with pytest.raises(Exception, match="steps"):
        check_config(config)
    taken = copy.deepcopy(with_canary())
    extra = copy.deepcopy(app(taken, "sentiment"))
    extra.update(name="sentiment-canary", route_prefix="/models/x")
    taken["applications"].append(extra)
    with pytest.raises(Exception, match="exists already"):
        check_config(taken)
