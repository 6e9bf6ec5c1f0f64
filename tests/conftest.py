"""Shared fixtures: repository paths and the locally generated test models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve" / "serve_config.yaml"
TINY_MODELS = ROOT / ".cache" / "models" / "tiny"


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """Tiny random-weight sentiment/summarization models and the real MiniLM, written once."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_test_models.py"),
            "--size",
            "tiny",
            "--out",
            str(TINY_MODELS),
        ],
        check=True,
    )
    return TINY_MODELS
