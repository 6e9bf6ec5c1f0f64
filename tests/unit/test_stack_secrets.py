"""images/stack_secrets.py: generated once, kept, replaced from .env, readable by its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
