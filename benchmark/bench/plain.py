"""d. FastAPI + uvicorn in one process (benchmark/plain_fastapi.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import HERE, PEER_PORT, server
from bench.load_levels import levels


def plain(work: Path, env: dict[str, str], bodies: Path, args: argparse.Namespace) -> dict:
    """d at every level."""
    url = f"http://127.0.0.1:{PEER_PORT}"
    cmd = [sys.executable, str(HERE / "plain_fastapi.py"), "--port", str(PEER_PORT)]
    with server(cmd, env, f"{url}/healthz", work / "fastapi.log"):
        return levels(f"{url}/predict", bodies, args)
