"""loadtest/: shapes, users and the exporter, checked in a separate pytest process (see
locust_checks.py for why)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_loadtest_checks_pass_in_their_own_process() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "unit" / "locust_checks.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
