"""One client's latency on two systems, measured in alternating slices: the lone-request p50 is a
few milliseconds, less than the machine drifts in the minutes between two systems' turns."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.common import log
from bench.load_levels import load

ROUNDS = 3
SLICE_S = 3.0


def interleaved(
    targets: dict[str, tuple[str, Path]], rounds: int = ROUNDS, seconds: float = SLICE_S
) -> dict[str, Any]:
    """One closed-loop client on each target (name: (url, bodies)) in turn, `rounds` times. Each
    target's p50 is the median of its slices' p50s; `levels` holds its slices, the shape a
    level has elsewhere in the results."""
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, bodies) in targets.items():
            slices[name].append(load(url, bodies, 1.0, seconds, concurrency=1))
    result: dict[str, Any] = {}
    for name, runs in slices.items():
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        rps = statistics.median(r["rps"] for r in runs)
        level = {"concurrency": 1, "rps": rps, "p50_ms": p50, "p99_ms": p99, "slices": runs}
        result[name] = {"levels": [level], "saturation_rps": rps}
    log("  one client, interleaved: " + ", ".join(
        f"{n} p50 {r['levels'][0]['p50_ms']:.1f} ms" for n, r in result.items()
    ))  # fmt: skip
    return result
