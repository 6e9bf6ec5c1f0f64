"""Config parsing: the shipped file is valid, and each mistake fails naming its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve.check_config import ConfigError, check_config, main
from serve.config import AppArgs, ModelAppArgs, ModelSpec, Task, resolve_source
from tests.conftest import SERVE_CONFIG

ARGS = {
    "models": {
        "sentiment": {"task": "sentiment", "source": "some/model"},
        "summarization": {"task": "summarization", "source": "/models/bart"},
    }
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
    assert {n: m.task for n, m in args.models.items()} == {
        "sentiment": Task.SENTIMENT,
        "summarization": Task.SUMMARIZATION,
        "embedding": Task.EMBEDDING,
    }
    assert args.models["summarization"].generation_options.max_length == 80
    assert args.models["summarization"].generation_options.min_length == 20


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


def test_check_config_rejects_a_model_application_named_otherwise(shipped: dict) -> None:
    model_app(shipped, "embedding")["name"] = "embeddings"
    with pytest.raises(
        ConfigError, match=r"applications\[3\]\.name: 'embeddings' must be 'embedding'"
    ):
        check_config(shipped)


def test_check_config_rejects_admission_at_serve_limit(shipped: dict) -> None:
    sentiment = deployment(shipped, "sentiment")
    sentiment["user_config"]["max_pending_requests"] = sentiment["max_ongoing_requests"]
    with pytest.raises(
        ConfigError, match=r"deployments\[sentiment\]\.max_ongoing_requests: .* must exceed"
    ):
        check_config(shipped)


def test_model_app_must_serve_a_configured_model() -> None:
    with pytest.raises(ValidationError, match="'translation' is not one of the models"):
        ModelAppArgs.model_validate({**ARGS, "model": "translation"})
    assert (
        ModelAppArgs.model_validate(
            {**ARGS, "model_app_prefix": "a-", "model": "sentiment"}
        ).model_app("sentiment")
        == "a-sentiment"
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
    assert args.default_model == "sentiment"
    assert args.models["summarization"].generation_options.max_length == 80


def test_args_unknown_task_names_field() -> None:
    bad = copy.deepcopy(ARGS)
    bad["models"]["sentiment"]["task"] = "translation"
    with pytest.raises(ValidationError) as err:
        AppArgs.model_validate(bad)
    assert ("models", "sentiment", "task") in [e["loc"] for e in err.value.errors()]


def test_args_missing_source_names_field() -> None:
    bad = copy.deepcopy(ARGS)
    del bad["models"]["summarization"]["source"]
    with pytest.raises(ValidationError) as err:
        AppArgs.model_validate(bad)
    assert ("models", "summarization", "source") in [e["loc"] for e in err.value.errors()]


def test_args_misspelled_field_is_rejected() -> None:
    bad = copy.deepcopy(ARGS)
    bad["models"]["sentiment"]["sorce"] = "x"
    with pytest.raises(ValidationError, match="sorce"):
        AppArgs.model_validate(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classify_model": "summarization"}, "must be a sentiment model"),
        ({"default_model": "embedding"}, "default_model 'embedding' is not one of"),
        ({"models": {"Bad Name": {"task": "sentiment", "source": "x"}}}, "lowercase"),
        ({"models": {}}, "at least 1"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
    ],
)
def test_args_rejects(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AppArgs.model_validate({**ARGS, **change})


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
    app_of(shipped)["args"]["models"]["embedding"]["task"] = "embed"
    with pytest.raises(ConfigError, match=r"args\.models\.embedding\.task"):
        check_config(shipped)


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


def test_check_config_rejects_timeout_above_proxy_timeout(shipped: dict) -> None:
    app_of(shipped)["args"]["models"]["summarization"]["timeout_s"] = 120
    with pytest.raises(ConfigError, match=r"args\.models\.summarization\.timeout_s"):
        check_config(shipped)


def test_revision_pins_a_hub_source_and_must_not_be_empty() -> None:
    spec = ModelSpec(task=Task.SENTIMENT, source="org/model", revision="714eb0f")
    assert spec.revision == "714eb0f"
    assert ModelSpec(task=Task.SENTIMENT, source="org/model").revision is None
    with pytest.raises(ValidationError, match="revision"):
        ModelSpec(task=Task.SENTIMENT, source="org/model", revision="")
