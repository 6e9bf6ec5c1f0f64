"""scripts/fetch_models.py on local sources (the hub is the same code path behind one call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, SERVE_CONFIG

SCRIPT = ROOT / "scripts" / "fetch_models.py"


def test_fetch_copies_local_sources_and_is_idempotent(tiny_models: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    for name, spec in config["applications"][0]["args"]["models"].items():
        spec["source"] = str(tiny_models / name)
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    dest = tmp_path / "models"

    cmd = [sys.executable, str(SCRIPT), "--config", str(config_path), "--dest", str(dest)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert first.stdout.count("copying") == 3
    for name in ("sentiment", "summarization", "embedding"):
        assert (dest / name / "config.json").is_file()

    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "copying" not in second.stdout
    assert second.stdout.count("already prepared") == 3


def test_fetch_unreachable_source_fails_clearly(tmp_path: Path) -> None:
    config = {
        "applications": [
            {
                "import_path": "serve.app:build_app",
                "args": {
                    "models": {"sentiment": {"task": "sentiment", "source": "/nonexistent/x"}}
                },
            }
        ]
    }
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config_path), "--dest", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "sentiment: could not fetch '/nonexistent/x'" in result.stderr
