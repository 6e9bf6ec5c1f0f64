"""Shared fixtures: repository paths and the locally generated test models."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve" / "serve_config.yaml"
TINY_MODELS = ROOT / ".cache" / "models" / "tiny"


def sigint_default() -> None:
    """A child's `preexec_fn`: SIGINT back to its default. Locust stops on SIGINT, and a shell
    that started the test run in the background (`cmd &`, nohup, cron, many CI runners) made
    every child ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def compose_command() -> list[str]:
    """`docker compose` (v2) or `docker-compose` (v1), whichever this machine has; [] if neither."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return []


def deployment_of(config: dict, name: str) -> dict:
    """The deployment `name` in a Serve config, whichever application holds it."""
    return next(
        d for app in config["applications"] for d in app.get("deployments", []) if d["name"] == name
    )


def load_script(path: Path) -> ModuleType:
    """A script of the repository (not a package module) imported by path, as tests call its
    functions. Its folder goes on sys.path for the helpers beside it (scripts/ray_auth.py), and the
    module into sys.modules, where dataclasses look it up."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` (leaving the shared stack changed or down) run after every other test
    of their tier (their directory), in their own order, whatever the order of the modules."""
    for item in [item for item in items if item.get_closest_marker("last")]:
        items.remove(item)
        tier = [n for n, other in enumerate(items) if other.path.parent == item.path.parent]
        items.insert(tier[-1] + 1 if tier else len(items), item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With E2E_REQUIRED=1 (CI), a skipped e2e test is a failure: the stack must really run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("E2E_REQUIRED") == "1" and "e2e" in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"e2e test skipped but E2E_REQUIRED=1: {report.longrepr}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Seconds spent in each test file (setup, call and teardown), slowest first: where a run's
    time goes, for keeping the whole suite within its CI budget."""
    spent: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                path = report.nodeid.split("::")[0]
                spent[path] = spent.get(path, 0.0) + report.duration
    if spent:
        terminalreporter.write_sep("=", "time per test file")
        for path, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:8.1f}s {path}")
