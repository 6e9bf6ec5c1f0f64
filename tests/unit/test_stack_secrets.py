"""images/stack_secrets.py: generated once, kept, replaced from .env, readable by its owner only."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, load_script

stack_secrets = load_script(ROOT / "images" / "stack_secrets.py")

TOKEN = stack_secrets.Secret("ray_auth_token", "RAY_AUTH_TOKEN", os.getuid(), lambda: "generated")


def test_secret_generated_then_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert stack_secrets.ensure(tmp_path, TOKEN) == "generated"
    path = tmp_path / "ray_auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert path.stat().st_uid == os.getuid()
    kept = stack_secrets.Secret("ray_auth_token", "RAY_AUTH_TOKEN", os.getuid(), lambda: "other")
    assert stack_secrets.ensure(tmp_path, kept) == "generated"


def test_env_value_replaces_the_stored_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    stack_secrets.ensure(tmp_path, TOKEN)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "chosen-in-env")
    assert stack_secrets.ensure(tmp_path, TOKEN) == "chosen-in-env"
    assert (tmp_path / "ray_auth_token").read_text() == "chosen-in-env"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("value", ["two words", 'quo"te', "it's", "naïve"])
def test_env_value_that_redis_would_mangle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", value)
    with pytest.raises(stack_secrets.SecretError, match="RAY_AUTH_TOKEN"):
        stack_secrets.ensure(tmp_path, TOKEN)
    assert not (tmp_path / "ray_auth_token").exists()


def test_generated_values_are_long_and_distinct() -> None:
    values = {s.file: s.generate() for s in stack_secrets.SECRETS}
    assert len(set(values.values())) == 3
    assert all(len(v) >= 24 and stack_secrets.ALLOWED.fullmatch(v) for v in values.values())


TEMPLATE = (ROOT / "alertmanager" / "alertmanager.yml").read_text()


def webhooks(rendered: str) -> list[dict]:
    config = yaml.safe_load(rendered)
    return [h for r in config["receivers"] for h in r.get("webhook_configs", [])]


def test_alertmanager_config_takes_the_webhook_url_from_env() -> None:
    rendered = stack_secrets.alertmanager_config(TEMPLATE, "https://hooks.example/T0K3N")
    assert [h["url"] for h in webhooks(rendered)] == ["https://hooks.example/T0K3N"]
    assert yaml.safe_load(rendered)["route"] == yaml.safe_load(TEMPLATE)["route"]


def test_alertmanager_config_without_a_url_has_no_webhook() -> None:
    rendered = stack_secrets.alertmanager_config(TEMPLATE, "")
    assert webhooks(rendered) == []
    assert yaml.safe_load(rendered)["route"]["receiver"] == "webhook"  # still a valid route


@pytest.mark.parametrize("url", ["hooks.example/x", "https://a b", "ftp://x"])
def test_alertmanager_webhook_url_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(stack_secrets.SecretError, match="ALERT_WEBHOOK_URL"):
        stack_secrets.alertmanager_config(TEMPLATE, url)


def test_alertmanager_config_is_written_for_its_reader_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() renders it beside the secrets; here for this test's user instead of 65534."""
    mine = tuple(dataclasses.replace(s, owner=os.getuid()) for s in stack_secrets.SECRETS)
    monkeypatch.setattr(stack_secrets, "SECRETS", mine)
    for uid in ("ALERTMANAGER_UID", "REDIS_UID"):
        monkeypatch.setattr(stack_secrets, uid, os.getuid())
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://10.0.0.9:9000/alerts")
    template = tmp_path / "template.yml"
    template.write_text(TEMPLATE)
    monkeypatch.setattr("sys.argv", ["stack_secrets.py", str(tmp_path / "out"), str(template)])
    assert stack_secrets.main() == 0
    written = tmp_path / "out" / "alertmanager.yml"
    assert stat.S_IMODE(written.stat().st_mode) == 0o400
    assert [h["url"] for h in webhooks(written.read_text())] == ["http://10.0.0.9:9000/alerts"]
