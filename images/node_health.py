"""Container health of a Ray node: its raylet process is running and the cluster's GCS answers.

Used as the image's HEALTHCHECK (stdlib only, plus Ray's own `ray health-check`). The GCS address
comes from RAY_HEAD_ADDRESS (default 127.0.0.1:6379, the head itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def process_running(executable: bytes) -> bool:
    """Whether a process on this host was started from a path containing `executable`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if executable in cmdline.split(b"\0")[0]:
            return True
    return False


def main() -> int:
    if not process_running(b"/raylet"):
        print("unhealthy: no raylet process on this node")
        return 1
    address = os.environ.get("RAY_HEAD_ADDRESS", "127.0.0.1:6379")
    check = subprocess.run(
        ["ray", "health-check", "--address", address],
        capture_output=True,
        text=True,
        timeout=8,
    )
    if check.returncode != 0:
        print(f"unhealthy: GCS at {address} did not answer: {check.stderr.strip()[-300:]}")
        return 1
    print(f"healthy: raylet running, GCS at {address} answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
