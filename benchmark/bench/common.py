"""Paths, ports, texts and the HTTP servers every measurement uses."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parents[1]  # benchmark/
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this project's `serve` package

SERVE_CONFIG = ROOT / "serve" / "serve_config.yaml"
HTTP_PORT = 18100
DASHBOARD_PORT = 18365
METRICS_PORT = 18366  # the Ray node's metrics agent (Prometheus text)
PEER_PORT = 18110
VOCABULARY = (
    "the service was quick and friendly but the food arrived cold while our table waited "
    "for almost an hour before anyone noticed that the order had been lost somewhere in a "
    "busy kitchen full of new staff who were still learning how everything worked there"
)
WORDS = VOCABULARY.split()


def log(message: str) -> None:
    print(f"[benchmark] {message}", flush=True)


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file, as compose's `env_file` reads them (no quoting here)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


def make_texts(count: int, words: int, seed: int = 0) -> list[str]:
    """Fixed pseudo-sentences of `words` words (about 30 DistilBERT tokens at 26 words)."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)
    ]


def write_bodies(path: Path, texts: list[str], **extra: str) -> Path:
    path.write_text(json.dumps([{**extra, "text": t} for t in texts]))
    return path


def wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


@contextmanager
def server(
    cmd: list[str], env: dict[str, str], health: str, log_path: Path
) -> Iterator[subprocess.Popen]:
    with open(log_path, "w") as out:
        process = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        wait_http(health, 300, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
