"""e. BentoML with adaptive batching (benchmark/bento_peer.py), in its own virtualenv."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import HERE, PEER_PORT, ROOT, log, server
from bench.load_levels import levels, process_cpu_seconds

BENTO_LOCK = HERE / "requirements-bentoml.lock"


def bento_python(venv: Path) -> Path:
    """A virtualenv with BentoML's locked pins on top of this environment's packages (torch and
    transformers come from here, so the model code is the same)."""
    python = venv / "bin" / "python"
    marker = venv / ".lock-installed"
    if marker.exists() and marker.read_text() == BENTO_LOCK.read_text():
        return python
    log(f"creating {venv} for BentoML (once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "base-env.pth").write_text(here + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(BENTO_LOCK)], check=True
    )
    marker.write_text(BENTO_LOCK.read_text())
    return python


@contextmanager
def bento_server(
    work: Path, env: dict[str, str], texts: list[str], args: argparse.Namespace
) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`bentoml serve bento_peer:Sentiment` in its own virtualenv: (predict URL, bodies, the
    server process) while it runs."""
    python = bento_python(args.bento_venv)
    bodies = work / "bento.json"
    bodies.write_text(json.dumps([{"texts": [t]} for t in texts]))
    url = f"http://127.0.0.1:{PEER_PORT + 1}"
    cmd = [
        str(python), "-m", "bentoml", "serve", "bento_peer:Sentiment",
        "--host", "127.0.0.1", "--port", str(PEER_PORT + 1), "--working-dir", str(HERE),
    ]  # fmt: skip
    env = {**env, "PYTHONPATH": str(ROOT)}  # this project's model code, for ONNX Runtime
    with server(cmd, env, f"{url}/readyz", work / "bentoml.log") as process:
        yield f"{url}/predict", bodies, process


def bento_levels(
    url: str, bodies: Path, process: subprocess.Popen, args: argparse.Namespace
) -> dict:
    """e at every level, with its processes' CPU time per request (as b's Ray processes')."""
    return levels(url, bodies, args, process_cpu_seconds(process.pid, "bentoml"))
