"""The loadtest lock installs where the README says: pip resolves it for every promised platform
and Python version, wheels only, from the public index alone (no pip configuration of this
machine), and the resolution is the lock itself: nothing missing, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LOADTEST_LOCK = ROOT / "requirements-loadtest.lock"
# The platform tags a user's pip accepts there (pip is given them, as it runs elsewhere).
PLATFORMS = {
    "linux-x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "linux-aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "macos-x86_64": [
        "macosx_13_0_x86_64",
        "macosx_11_0_universal2",
        "macosx_10_9_x86_64",
        "macosx_10_9_universal2",
    ],
    "macos-arm64": ["macosx_13_0_arm64", "macosx_11_0_arm64", "macosx_11_0_universal2"],
}


def pins(lock: Path) -> set[str]:
    return {
        line.split("==")[0].lower().replace("_", "-") + "==" + line.split("==")[1]
        for line in lock.read_text().splitlines()
        if line and not line.startswith("#")
    }


@pytest.mark.parametrize("python", ["3.11", "3.12"])
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_loadtest_lock_resolves_from_the_public_index(
    tmp_path: Path, platform: str, python: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS" and "INDEX" not in k}
    env["PIP_CONFIG_FILE"] = os.devnull  # this machine's package folders and constraints
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--only-binary=:all:", "--python-version", python,
            *(arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)),
            "--target", str(tmp_path / "target"), "--index-url", "https://pypi.org/simple",
            "--quiet", "--report", str(report), "-r", str(LOADTEST_LOCK),
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    resolved = {
        item["metadata"]["name"].lower().replace("_", "-") + "==" + item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved == pins(LOADTEST_LOCK)
