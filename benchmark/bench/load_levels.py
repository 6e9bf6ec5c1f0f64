"""Closed- and open-loop load from benchmark/load.py in its own process, and the CPU time of Ray's
processes by role, per answered request and while idle."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import HERE, log


def load(url: str, bodies: Path, warmup: float, seconds: float, **mode: float) -> dict[str, Any]:
    args = [f"--{key}={value}" for key, value in mode.items()]
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "load.py"),
            "--url",
            url,
            "--bodies",
            str(bodies),
            *args,
            f"--warmup={warmup}",
            f"--seconds={seconds}",
        ],
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 180,
        check=True,
    )
    result = json.loads(out.stdout)
    log(
        f"  {mode}: {result['rps']:.1f} rps, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, errors {result['errors'] or 0}"
    )
    return result


def ray_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this machine's Ray processes, by role (Serve names its actors'
    processes `ray::ProxyActor`, `ray::ServeReplica:<app>:<deployment>`, ...; the rest are
    named by executable or script: `ray raylet`, `ray gcs_server`, `ray dashboard`, ...)."""
    import psutil

    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmdline = proc.info["cmdline"] or [proc.info["name"] or ""]
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        cmd = cmdline[0]
        script = next((a for a in cmdline[1:] if "/ray/" in a and a.endswith(".py")), None)
        if cmd.startswith("ray::ServeReplica:"):
            role = "replica " + cmd.rsplit(":", 1)[-1].split()[0].split(".")[0]
        elif cmd.startswith("ray::ProxyActor"):
            role = "proxy"
        elif cmd.endswith("/haproxy"):  # the HTTP ingress with RAY_SERVE_ENABLE_HA_PROXY=1
            role = "haproxy"
        elif cmd.startswith("ray::"):
            role = "ray " + cmd[5:].split()[0].split(".")[0]
        elif cmd.endswith(("/raylet", "/gcs_server")):
            role = "ray " + Path(cmd).name
        elif script:
            role = "ray " + Path(script).stem
        elif any("/ray/" in arg for arg in cmdline):
            role = "ray (other)"
        else:
            continue
        totals[role] = totals.get(role, 0.0) + times.user + times.system
    return totals


def idle_cpu(seconds: float = 10.0) -> dict[str, float]:
    """Per-role CPU use of Ray's processes, in % of one core, with the application deployed and
    no traffic: the fixed cost that competes with the model for the cores."""
    before = ray_cpu_seconds()
    time.sleep(seconds)
    after = ray_cpu_seconds()
    usage = {r: round((after[r] - before.get(r, 0.0)) * 100 / seconds, 2) for r in sorted(after)}
    log(f"  idle CPU %: {usage} (total {sum(usage.values()):.1f})")
    return usage


def process_cpu_seconds(pid: int, role: str) -> Callable[[], dict[str, float]]:
    """A CPU probe like ray_cpu_seconds for one server's process tree (e's BentoML processes)."""
    import psutil

    def probe() -> dict[str, float]:
        total = 0.0
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return {role: total}

    return probe


def levels(
    url: str,
    bodies: Path,
    args: argparse.Namespace,
    profile: bool | Callable[[], dict[str, float]] = False,
    concurrency: list[int] | None = None,
) -> dict[str, Any]:
    """Closed-loop load at each concurrency (default: --levels); with `profile` (True: Ray's
    processes by role; or a probe such as process_cpu_seconds), the server's CPU time per
    answered request for each level."""
    probe = ray_cpu_seconds if profile is True else profile or None
    runs = []
    for clients in concurrency or args.levels:
        before = probe() if probe else {}
        run = load(url, bodies, args.warmup, args.seconds, concurrency=clients)
        if probe and run["answered"]:
            after = probe()
            run["cpu_ms_per_request"] = {
                role: round((after[role] - before.get(role, 0.0)) * 1000 / run["answered"], 2)
                for role in sorted(after)
            }
            run["cpu_ms_per_request"]["load generator"] = run["client_cpu_ms_per_request"]
            log(f"    CPU ms per request: {run['cpu_ms_per_request']}")
        runs.append(run)
    best = max(runs, key=lambda r: r["rps"])
    return {"url": url, "levels": runs, "saturation_rps": best["rps"]}
