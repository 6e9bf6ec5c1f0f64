"""Config parsing: the shipped file is valid, and each mistake fails naming its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve.check_config import ConfigError, check_config, main
from serve.config import (
    AppArgs,
    CanarySpec,
    ModelAppArgs,
    ModelSpec,
    RouterUserConfig,
    Task,
    resolve_source,
)
from tests.conftest import SERVE_CONFIG

ARGS = {"models": ["sentiment", "summarization"]}  # the Router's
# A model application's, one per model.
SENTIMENT_ARGS = {"model": "sentiment", "spec": {"task": "sentiment", "source": "some/model"}}
SUMMARIZATION_ARGS = {
    "model": "summarization",
    "spec": {"task": "summarization", "source": "/models/bart"},
}


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def app_of(config: dict) -> dict:
    return config["applications"][0]


def deployment(config: dict, name: str) -> dict:
    return next(
        d for app in config["applications"] for d in app["deployments"] if d["name"] == name
    )


def model_app(config: dict, name: str) -> dict:
    return next(app for app in config["applications"] if app["name"] == name)


def test_shipped_config_is_valid(shipped: dict) -> None:
    schema = check_config(shipped)
    app = schema.applications[0]
    assert app.import_path == "serve.app:build_app"
    args = AppArgs.model_validate(app.args)
    assert args.models == ["sentiment", "summarization", "embedding"]
    assert args.request_timeout_s == 85
    specs = {
        a.name: ModelAppArgs.model_validate(a.args).spec
        for a in schema.applications
        if a.import_path == "serve.app:build_model_app"
    }
    assert {n: s.task for n, s in specs.items()} == {
        "sentiment": Task.SENTIMENT,
        "summarization": Task.SUMMARIZATION,
        "embedding": Task.EMBEDDING,
    }
    assert specs["summarization"].generation_options.max_length == 80
    assert specs["summarization"].generation_options.min_length == 20
    assert {s.effective_version for s in specs.values()} == {"1"}
    assert all(s.canary is None for s in specs.values())


def test_every_application_shares_the_routers_api_limits(shipped: dict) -> None:
    """One `api` block (a YAML alias): a shared limit is set once, for every application."""
    api = app_of(shipped)["args"]["api"]
    assert api["model_dir"] == "/models"
    for app in shipped["applications"][1:]:
        assert app["args"]["api"] == api
        assert set(app["args"]) == {"api", "model", "spec"}


def test_model_timeout_falls_back_to_the_apis() -> None:
    assert ModelAppArgs.model_validate(SENTIMENT_ARGS).timeout_s == 30
    own = {**SUMMARIZATION_ARGS, "spec": {**SUMMARIZATION_ARGS["spec"], "timeout_s": 75}}
    assert ModelAppArgs.model_validate(own).timeout_s == 75
    api = {**SENTIMENT_ARGS, "api": {"inference_timeout_s": 5}}
    assert ModelAppArgs.model_validate(api).timeout_s == 5


def test_every_model_is_an_application_on_its_own_route(shipped: dict) -> None:
    schema = check_config(shipped)
    apps = {app.name: app for app in schema.applications}
    for name in ("sentiment", "summarization", "embedding"):
        app = apps[name]
        assert app.route_prefix == f"/models/{name}"
        assert app.import_path == "serve.app:build_model_app"
        assert ModelAppArgs.model_validate(app.args).model == name
        assert [d.name for d in app.deployments] == [name]
    assert [d.name for d in apps["models"].deployments] == ["Router"]


def test_check_config_rejects_a_model_without_its_application(shipped: dict) -> None:
    shipped["applications"] = [a for a in shipped["applications"] if a["name"] != "embedding"]
    with pytest.raises(
        ConfigError, match=r"applications\[0\]\.args\.models: no application \['embedding'\]"
    ):
        check_config(shipped)


def test_check_config_checks_the_slo_policy_kwargs(shipped: dict) -> None:
    policy = deployment(shipped, "sentiment")["autoscaling_config"]["policy"]
    assert policy["policy_function"] == "serve.slo_policy:SloPolicy"
    policy["policy_kwargs"] = {"p95_ms": 300, "scale_up_at": 0.5}
    with pytest.raises(ConfigError, match=r"deployments\[sentiment\]\.autoscaling_config\.policy"):
        check_config(shipped)
    # Ray's default is the same config without `policy`.
    del deployment(shipped, "sentiment")["autoscaling_config"]["policy"]
    check_config(shipped)


def test_check_config_rejects_a_model_application_named_otherwise(shipped: dict) -> None:
    model_app(shipped, "embedding")["name"] = "embeddings"
    with pytest.raises(
        ConfigError, match=r"applications\[0\]\.args\.models: no application \['embedding'\]"
    ):
        check_config(shipped)


def test_check_config_rejects_a_model_application_serving_another_model(shipped: dict) -> None:
    model_app(shipped, "embedding")["args"]["model"] = "sentiment"
    with pytest.raises(ConfigError) as err:
        check_config(shipped)
    assert "applications[3].args.model: 'sentiment', expected 'embedding'" in str(err.value)
    assert "applications[3].deployments[embedding].name" in str(err.value)


def test_check_config_rejects_admission_at_serve_limit(shipped: dict) -> None:
    sentiment = deployment(shipped, "sentiment")
    sentiment["user_config"]["max_pending_requests"] = sentiment["max_ongoing_requests"]
    with pytest.raises(
        ConfigError, match=r"deployments\[sentiment\]\.max_ongoing_requests: .* must exceed"
    ):
        check_config(shipped)


def test_model_app_must_serve_a_routable_model() -> None:
    with pytest.raises(ValidationError) as err:
        ModelAppArgs.model_validate({**SENTIMENT_ARGS, "model": "Bad Name"})
    assert ("model",) in [e["loc"] for e in err.value.errors()]
    with pytest.raises(ValidationError) as err:
        ModelAppArgs.model_validate({"model": "sentiment"})
    assert ("spec",) in [e["loc"] for e in err.value.errors()]
    # The model's specs live in its own application, not in the Router's args.
    with pytest.raises(ValidationError, match="models"):
        ModelAppArgs.model_validate({**SENTIMENT_ARGS, "models": ["sentiment"]})
    assert AppArgs.model_validate({**ARGS, "model_app_prefix": "a-"}).model_app("sentiment") == (
        "a-sentiment"
    )


def test_shipped_config_sets_every_model_knob(shipped: dict) -> None:
    for name in ("sentiment", "summarization", "embedding"):
        d = deployment(shipped, name)
        assert {
            "min_replicas",
            "max_replicas",
            "target_ongoing_requests",
            "upscale_delay_s",
            "downscale_delay_s",
        } <= set(d["autoscaling_config"])
        assert d["max_ongoing_requests"] >= d["user_config"]["max_batch_size"]
        assert d["max_ongoing_requests"] > d["user_config"]["max_pending_requests"]
        assert {"num_cpus", "memory"} <= set(d["ray_actor_options"])
        assert {
            "health_check_period_s",
            "health_check_timeout_s",
            "graceful_shutdown_timeout_s",
        } <= set(d)
    assert shipped["http_options"]["host"] == "0.0.0.0"
    assert shipped["http_options"]["port"] == 8000


def test_args_default_model_is_sentiment() -> None:
    args = AppArgs.model_validate(ARGS)
    assert args.default_model == args.classify_model == "sentiment"
    assert args.request_timeout_s == 85
    assert args.api.inference_timeout_s == 30
    spec = ModelAppArgs.model_validate(SUMMARIZATION_ARGS).spec
    assert spec.generation_options.max_length == 80


def test_args_unknown_task_names_field() -> None:
    bad = copy.deepcopy(SENTIMENT_ARGS)
    bad["spec"]["task"] = "translation"
    with pytest.raises(ValidationError) as err:
        ModelAppArgs.model_validate(bad)
    assert ("spec", "task") in [e["loc"] for e in err.value.errors()]


def test_args_missing_source_names_field() -> None:
    bad = copy.deepcopy(SUMMARIZATION_ARGS)
    del bad["spec"]["source"]
    with pytest.raises(ValidationError) as err:
        ModelAppArgs.model_validate(bad)
    assert ("spec", "source") in [e["loc"] for e in err.value.errors()]


def test_args_misspelled_field_is_rejected() -> None:
    bad = copy.deepcopy(SENTIMENT_ARGS)
    bad["spec"]["sorce"] = "x"
    with pytest.raises(ValidationError, match="sorce"):
        ModelAppArgs.model_validate(bad)
    with pytest.raises(ValidationError, match="inference_timeout"):
        AppArgs.model_validate({**ARGS, "api": {"inference_timeout": 5}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_model": "embedding"}, "default_model 'embedding' is not one of"),
        ({"classify_model": "embedding"}, "classify_model 'embedding' is not one of"),
        ({"models": ["Bad Name"]}, "lowercase"),
        ({"models": []}, "at least 1"),
        ({"models": ["sentiment", "sentiment"]}, "names a model twice"),
        ({"models": {"sentiment": {"task": "sentiment", "source": "x"}}}, "valid list"),
        ({"api": {"max_body_bytes": 10}}, "max_body_bytes"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
    ],
)
def test_args_rejects(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AppArgs.model_validate({**ARGS, **change})


def test_classify_model_must_be_a_sentiment_model(shipped: dict) -> None:
    """The Router's args name models only, so their task is checked across applications."""
    app_of(shipped)["args"]["classify_model"] = "summarization"
    assert AppArgs.model_validate(app_of(shipped)["args"]).classify_model == "summarization"
    with pytest.raises(
        ConfigError,
        match=r"applications\[0\]\.args\.classify_model: 'summarization' must be a sentiment "
        r"model \(it is 'summarization'\)",
    ):
        check_config(shipped)


def test_classify_model_whose_application_serves_another_task_is_rejected(
    shipped: dict,
) -> None:
    model_app(shipped, "sentiment")["args"]["spec"]["task"] = "embedding"
    with pytest.raises(
        ConfigError,
        match=r"applications\[0\]\.args\.classify_model: 'sentiment' must be a sentiment model",
    ):
        check_config(shipped)


def test_generation_only_for_summarization() -> None:
    with pytest.raises(ValidationError, match="only to task 'summarization'"):
        ModelSpec(task="sentiment", source="x", generation={"max_length": 100})


def test_quantize_not_for_summarization() -> None:
    with pytest.raises(ValidationError, match="quantize applies to 'sentiment' and 'embedding'"):
        ModelSpec(task="summarization", source="x", quantize="int8")
    with pytest.raises(ValidationError, match="'int8'"):
        ModelSpec(task="sentiment", source="x", quantize="int4")


def test_generation_min_above_max_rejected() -> None:
    with pytest.raises(ValidationError, match="exceeds max_length"):
        ModelSpec(task="summarization", source="x", generation={"max_length": 10, "min_length": 20})


def test_check_config_names_user_config_field(shipped: dict) -> None:
    deployment(shipped, "sentiment")["user_config"]["max_batch_size"] = 0
    with pytest.raises(ConfigError, match=r"deployments\[sentiment\]\.user_config\.max_batch_size"):
        check_config(shipped)


def test_check_config_rejects_max_ongoing_below_batch(shipped: dict) -> None:
    deployment(shipped, "embedding")["max_ongoing_requests"] = 4
    with pytest.raises(ConfigError, match=r"deployments\[embedding\]\.max_ongoing_requests"):
        check_config(shipped)


def test_check_config_rejects_deployment_without_model(shipped: dict) -> None:
    deployment(shipped, "embedding")["name"] = "embeddings"
    with pytest.raises(ConfigError, match=r"deployments\[embeddings\]\.name"):
        check_config(shipped)


def test_check_config_names_args_field(shipped: dict) -> None:
    model_app(shipped, "embedding")["args"]["spec"]["task"] = "embed"
    with pytest.raises(ConfigError, match=r"applications\[3\]\.args\.spec\.task"):
        check_config(shipped)
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    app_of(shipped)["args"]["api"]["max_text_chars"] = 0  # aliased: every application's
    with pytest.raises(ConfigError) as err:
        check_config(shipped)
    for i in range(4):
        assert f"applications[{i}].args.api.max_text_chars" in str(err.value)


def test_check_config_rejects_ray_schema_errors(shipped: dict) -> None:
    shipped["http_options"]["port"] = "eighty"
    with pytest.raises(ConfigError, match="port"):
        check_config(shipped)


def test_check_config_cli_exit_codes(tmp_path: Path, shipped: dict, capsys) -> None:
    assert main([str(SERVE_CONFIG)]) == 0
    deployment(shipped, "sentiment")["user_config"]["max_batch_size"] = "lots"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(shipped))
    assert main([str(bad)]) == 1
    assert "max_batch_size" in capsys.readouterr().err


def test_resolve_source_prefers_prepared_dir(tmp_path: Path) -> None:
    spec = ModelSpec(task="sentiment", source="hub/id")
    assert resolve_source("sentiment", spec, str(tmp_path)) == "hub/id"
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "config.json").write_text("{}")
    # A config without weights (an interrupted download) is not a prepared model.
    assert resolve_source("sentiment", spec, str(tmp_path)) == "hub/id"
    (tmp_path / "sentiment" / "pytorch_model.bin").write_bytes(b"")
    assert resolve_source("sentiment", spec, str(tmp_path)) == str(tmp_path / "sentiment")
    assert resolve_source("sentiment", spec, None) == "hub/id"


def prepare(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"")
    return directory


def test_resolve_source_prefers_the_versions_prepared_dir(tmp_path: Path) -> None:
    """`<name>@<version>/` (a canary's weights, kept once promoted) wins over `<name>/`."""
    stable = prepare(tmp_path / "sentiment")
    spec = ModelSpec(task="sentiment", source="hub/id", version="2")
    assert resolve_source("sentiment", spec, str(tmp_path)) == str(stable)
    (tmp_path / "sentiment@2").mkdir()
    (tmp_path / "sentiment@2" / "config.json").write_text("{}")
    # Incomplete (no weights): the next candidate.
    assert resolve_source("sentiment", spec, str(tmp_path)) == str(stable)
    (tmp_path / "sentiment@2" / "model.safetensors").write_bytes(b"")
    assert resolve_source("sentiment", spec, str(tmp_path)) == str(tmp_path / "sentiment@2")
    # Another version's directory is not this one's.
    other = ModelSpec(task="sentiment", source="hub/id", version="3")
    assert resolve_source("sentiment", other, str(tmp_path)) == str(stable)
    # A canary's spec resolves to its own version's directory.
    canaried = ModelSpec(task="sentiment", source="hub/id", canary={"version": "2"})
    assert resolve_source("sentiment", canaried, str(tmp_path)) == str(stable)
    assert resolve_source("sentiment", canaried.as_canary(), str(tmp_path)) == str(
        tmp_path / "sentiment@2"
    )
    # Without a version, the revision names it.
    pinned = ModelSpec(task="sentiment", source="hub/id", revision="abc")
    abc = prepare(tmp_path / "sentiment@abc")
    assert resolve_source("sentiment", pinned, str(tmp_path)) == str(abc)


def test_check_config_rejects_timeout_above_proxy_timeout(shipped: dict) -> None:
    model_app(shipped, "summarization")["args"]["spec"]["timeout_s"] = 120
    with pytest.raises(
        ConfigError,
        match=r"applications\[2\]\.args\.spec\.timeout_s: 120(\.0)?s is not below "
        r"http_options\.request_timeout_s",
    ):
        check_config(shipped)


def test_check_config_rejects_model_timeout_not_below_the_routers(shipped: dict) -> None:
    """The replica's own 504 must come before the Router gives up on the request."""
    model_app(shipped, "summarization")["args"]["spec"]["timeout_s"] = 85
    deployment(shipped, "summarization")["graceful_shutdown_timeout_s"] = 85
    with pytest.raises(ConfigError) as err:
        check_config(shipped)
    assert str(err.value).startswith(
        "applications[2].args.spec.timeout_s: 85.0s is not below the Router's request_timeout_s"
    ), err.value
    assert "http_options" not in str(err.value)


def test_check_config_rejects_router_timeout_not_below_proxy_timeout(shipped: dict) -> None:
    app_of(shipped)["args"]["request_timeout_s"] = shipped["http_options"]["request_timeout_s"]
    with pytest.raises(
        ConfigError,
        match=r"applications\[0\]\.args\.request_timeout_s: 90(\.0)?s is not below "
        r"http_options\.request_timeout_s \(90(\.0)?s\)",
    ):
        check_config(shipped)


def test_check_config_rejects_graceful_shutdown_below_the_models_timeout(
    shipped: dict,
) -> None:
    deployment(shipped, "summarization")["graceful_shutdown_timeout_s"] = 60
    with pytest.raises(
        ConfigError,
        match=r"applications\[2\]\.deployments\[summarization\]\.graceful_shutdown_timeout_s: "
        r"60(\.0)?s is below the model's timeout \(75(\.0)?s\)",
    ):
        check_config(shipped)
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    del deployment(shipped, "sentiment")["graceful_shutdown_timeout_s"]  # Serve's 20 s < 30 s
    with pytest.raises(
        ConfigError, match=r"deployments\[sentiment\]\.graceful_shutdown_timeout_s: .*\(30"
    ):
        check_config(shipped)


def test_check_config_rejects_router_graceful_shutdown_below_request_timeout(
    shipped: dict,
) -> None:
    deployment(shipped, "Router")["graceful_shutdown_timeout_s"] = 60
    with pytest.raises(
        ConfigError,
        match=r"applications\[0\]\.deployments\[Router\]\.graceful_shutdown_timeout_s: "
        r"60(\.0)?s is below args\.request_timeout_s \(85(\.0)?s\)",
    ):
        check_config(shipped)


def test_shipped_graceful_shutdowns_cover_the_longest_request(shipped: dict) -> None:
    router = AppArgs.model_validate(app_of(shipped)["args"])
    assert deployment(shipped, "Router")["graceful_shutdown_timeout_s"] >= router.request_timeout_s
    for name in router.models:
        timeout = ModelAppArgs.model_validate(model_app(shipped, name)["args"]).timeout_s
        assert timeout < router.request_timeout_s < shipped["http_options"]["request_timeout_s"]
        assert deployment(shipped, name)["graceful_shutdown_timeout_s"] >= timeout


CANARY = {"task": "sentiment", "source": "org/model", "version": "1"}


def test_canary_defaults_and_version() -> None:
    spec = ModelSpec(**CANARY, canary={"version": "2"})
    assert spec.canary == CanarySpec(version="2")
    assert spec.canary.steps == [10, 25, 50, 100]
    canary = spec.as_canary()
    assert (canary.effective_version, canary.source, canary.canary) == ("2", "org/model", None)
    moved = ModelSpec(**CANARY, canary={"version": "2", "source": "org/other", "revision": "abc"})
    assert (moved.as_canary().source, moved.as_canary().revision) == ("org/other", "abc")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, 5, 100], "must rise strictly"),
        ([10, 10, 100], "must rise strictly"),
        ([0, 50, 100], "must rise strictly"),
        ([10, 50, 150], "must rise strictly"),
        ([10, 50], "must end at 100"),
        ([], "at least 1"),
    ],
)
def test_canary_steps_must_rise_to_100(steps: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        ModelSpec(**CANARY, canary={"version": "2", "steps": steps})
    assert [e["loc"] for e in err.value.errors()] == [("canary", "steps")]


def test_check_config_names_the_canary_steps_field(shipped: dict) -> None:
    model_app(shipped, "sentiment")["args"]["spec"]["canary"] = {"version": "2", "steps": [50]}
    with pytest.raises(
        ConfigError, match=r"applications\[1\]\.args\.spec\.canary\.steps: .*must end at 100"
    ):
        check_config(shipped)


@pytest.mark.parametrize(
    ("stable", "canary_version"),
    [
        ({"version": "2"}, "2"),
        ({}, "1"),  # no version nor revision: "1"
        ({"revision": "714eb0f"}, "714eb0f"),  # no version: the revision
    ],
)
def test_canary_version_must_differ_from_the_stable_one(stable: dict, canary_version: str) -> None:
    with pytest.raises(ValidationError, match=f"canary.version '{canary_version}' is the stable"):
        ModelSpec(
            task="sentiment", source="org/model", **stable, canary={"version": canary_version}
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval_s", 1),
        ("min_requests", 0),
        ("max_p95_ratio", 0.5),
        ("max_error_ratio_increase", 2),
        ("ready_timeout_s", 0),
        ("sorce", "x"),
        ("version", "two words"),
    ],
)
def test_canary_fields_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        ModelSpec(**CANARY, canary={"version": "2", field: value})
    assert ("canary", field) in [e["loc"] for e in err.value.errors()]


def test_check_config_rejects_a_canary_whose_application_exists(shipped: dict) -> None:
    sentiment = model_app(shipped, "sentiment")
    taken = copy.deepcopy(sentiment)
    taken.update(name="sentiment-canary", route_prefix="/models/sentiment-canary")
    shipped["applications"].append(taken)
    check_config(shipped)  # an application of that name alone is fine
    sentiment["args"]["spec"]["canary"] = {"version": "2"}
    with pytest.raises(
        ConfigError,
        match=r"applications\[1\]\.args\.spec\.canary: the application 'sentiment-canary' "
        "exists already",
    ):
        check_config(shipped)


def test_router_user_config_holds_canary_shares() -> None:
    config = RouterUserConfig.model_validate(
        {"canaries": {"sentiment": {"version": "2", "share": 10}}}
    )
    assert config.canaries["sentiment"].share == 10
    assert RouterUserConfig.model_validate({}).canaries == {}
    with pytest.raises(ValidationError) as err:
        RouterUserConfig.model_validate({"canaries": {"sentiment": {"version": "2", "share": 101}}})
    assert ("canaries", "sentiment", "share") in [e["loc"] for e in err.value.errors()]


def test_revision_pins_a_hub_source_and_must_not_be_empty() -> None:
    spec = ModelSpec(task=Task.SENTIMENT, source="org/model", revision="714eb0f")
    assert spec.revision == "714eb0f"
    assert ModelSpec(task=Task.SENTIMENT, source="org/model").revision is None
    with pytest.raises(ValidationError, match="revision"):
        ModelSpec(task=Task.SENTIMENT, source="org/model", revision="")
