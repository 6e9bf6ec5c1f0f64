"""Ray's default autoscaling policy and the SLO policy side by side, on one cluster.

The same Locust shapes (loadtest/: step, spike, ramp) drive sentiment on a local Ray cluster
(Serve's fast path and images/ray-overhead.env, as compose runs them), once under Ray's default
policy and once under the SLO policy (serve/slo_policy.py), with the same min/max_replicas; each
policy's other settings are the shipped config's (the SLO policy scales up without a delay, the
default after upscale_delay_s 10). For every run it records each request (benchmark/
autoscaling_record.py) and the replicas Serve runs, once a second, and writes per shape
`{"default": {...}, "slo": {...}}`:

- slo_attainment: the share of 10 s windows whose p95 is within the SLO;
- replica_seconds: seconds x replicas that hold resources (starting or running);
- first_scale_up_s: from the shape's first rise to the first raised target;
- scale_events: changes of the target (flapping shows here);
- failed: requests Locust counted as failed;
- requests_per_s: requests answered in each second (the simulator replays it).

    python benchmark/autoscaling.py --out build/autoscaling/results.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cluster import FAST_PATH, OVERHEAD_ENV, RayCluster
from bench.common import DASHBOARD_PORT, HTTP_PORT, ROOT, log, read_env
from bench.ours import ours_config

WINDOW_S = 10.0
HOLDING = {"STARTING", "UPDATING", "RECOVERING", "RUNNING"}  # replicas that reserve resources


SHAPE_TIMING = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ramp_shape import RampShape
from spike_shape import SpikeShape as Spike
from step_shape import StepUpDownShape as Step
steps = (Step.peak_users - Step.base_users) // Step.step_users + 1
print(json.dumps({
    "step": [Step.step_s * steps + Step.hold_s + Step.cooldown_s, Step.step_s],
    "spike": [Spike.warmup_s + Spike.spike_s + Spike.recovery_s, Spike.warmup_s],
    "ramp": [RampShape.ramp_s + RampShape.hold_s + RampShape.cooldown_s, 0],
}))
"""


def shape_timing(shape: str) -> tuple[float, float]:
    """A loadtest/ shape's length, and when its load first rises. Read in a process of its own:
    Locust patches the standard library on import, which breaks a process that has used ssl."""
    out = subprocess.run(
        [sys.executable, "-c", SHAPE_TIMING, str(ROOT / "loadtest")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    length, rise = json.loads(out.strip().splitlines()[-1])[shape]
    return float(length), float(rise)


def policy_config(
    model_dir: Path, policy: str, min_replicas: int, max_replicas: int
) -> dict[str, Any]:
    """The shipped config, sentiment only, under `policy` (default: Ray's, as the comment in the
    config describes it)."""
    config = ours_config(model_dir, min_replicas)
    app = next(a for a in config["applications"] if a["name"] == "sentiment")
    autoscaling = app["deployments"][0]["autoscaling_config"]
    autoscaling.update(min_replicas=min_replicas, max_replicas=max_replicas)
    if policy == "default":
        autoscaling.pop("policy")
        autoscaling["upscale_delay_s"] = 10
    return config


def replicas_now() -> tuple[int, int]:
    """(replicas holding resources, the autoscaler's target) of sentiment."""
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    apps = requests.get(
        f"http://127.0.0.1:{DASHBOARD_PORT}/api/serve/applications/",
        headers=get_auth_headers_if_auth_enabled({}),  # the cluster's token, as Ray's CLIs send it
        timeout=10,
    ).json()["applications"]
    deployment = apps["sentiment"]["deployments"]["sentiment"]
    holding = sum(r["state"] in HOLDING for r in deployment["replicas"])
    return holding, int(deployment.get("target_num_replicas") or holding)


def settle(min_replicas: int, timeout_s: float = 240) -> None:
    """Back to min_replicas before a run starts (the last run scaled up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if replicas_now() == (min_replicas, min_replicas):
            return
        time.sleep(2)
    raise RuntimeError(f"sentiment did not return to {min_replicas} replicas in {timeout_s}s")


def drive(shape: str, work: Path, name: str) -> tuple[list[tuple[float, int, int]], Path, float]:
    """Locust through `shape`; Serve's replicas once a second meanwhile."""
    record = work / f"{name}.requests"
    record.unlink(missing_ok=True)
    length, _ = shape_timing(shape)
    env = {**os.environ, "AUTOSCALING_RECORD": str(record), "LOCUST_SHAPE": shape}
    locust = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            f"{ROOT / 'loadtest'},{Path(__file__).parent / 'autoscaling_record.py'}",
            "--headless",
            "--host",
            f"http://127.0.0.1:{HTTP_PORT}",
            "--exporter-port",
            "0",
            "--only-summary",
            "SentimentUser",
        ],
        env=env,
        stdout=(work / f"{name}.locust.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    started = time.time()
    timeline: list[tuple[float, int, int]] = []
    while locust.poll() is None and time.time() - started < length + 60:
        holding, target = replicas_now()
        timeline.append((time.time() - started, holding, target))
        time.sleep(1)
    if locust.poll() is None:
        locust.terminate()
    locust.wait(60)
    return timeline, record, started


def summarize(
    timeline: list[tuple[float, int, int]],
    record: Path,
    started: float,
    rise_s: float,
    slo_s: float,
) -> dict[str, Any]:
    windows: dict[int, list[float]] = {}
    per_second: dict[int, int] = {}  # requests answered in each second: the simulator's trace
    failed = total = 0
    for line in record.read_text().splitlines():
        at, latency_ms, ok = line.split()
        total += 1
        failed += ok == "0"
        windows.setdefault(int((float(at) - started) // WINDOW_S), []).append(float(latency_ms))
        second = int(float(at) - started)
        per_second[second] = per_second.get(second, 0) + 1
    p95s = {
        w: statistics.quantiles(v, n=20)[-1] / 1000 if len(v) > 1 else v[0] / 1000
        for w, v in sorted(windows.items())
    }
    replica_seconds = sum(
        holding * (later[0] - at) for (at, holding, _), later in itertools.pairwise(timeline)
    )
    targets = [target for _, _, target in timeline]
    first_target = targets[0] if targets else 0
    first_up = next((at for at, _, target in timeline if target > first_target), None)
    return {
        "slo_attainment": round(sum(p <= slo_s for p in p95s.values()) / max(len(p95s), 1), 3),
        "replica_seconds": round(replica_seconds, 1),
        "first_scale_up_s": None if first_up is None else round(first_up - rise_s, 1),
        "scale_events": sum(a != b for a, b in itertools.pairwise(targets)),
        "failed": failed,
        "requests": total,
        "window_p95_s": {str(w * WINDOW_S): round(p, 3) for w, p in p95s.items()},
        "requests_per_s": [per_second.get(i, 0) for i in range(max(per_second, default=-1) + 1)],
        "timeline": [(round(at, 1), holding, target) for at, holding, target in timeline],
    }


def picture(shape: str, runs: dict[str, dict[str, Any]], slo_s: float, path: Path) -> None:
    """Replicas and the windows' p95 of both policies on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    for name, run in runs.items():
        at = [t for t, _, _ in run["timeline"]]
        top.step(at, [h for _, h, _ in run["timeline"]], where="post", label=f"{name} replicas")
        windows = sorted((float(w), p) for w, p in run["window_p95_s"].items())
        bottom.plot([w + WINDOW_S / 2 for w, _ in windows], [p * 1000 for _, p in windows], "o-",
                    label=f"{name} p95")  # fmt: skip
    bottom.axhline(slo_s * 1000, color="grey", linestyle="--", label="SLO")
    top.set_ylabel("replicas")
    bottom.set_ylabel("p95 per 10 s (ms)")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds")
    top.set_title(f"sentiment, {shape}: Ray's default policy vs the SLO policy")
    top.legend(loc="upper right")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("AIRGAP_CACHE_DIR", Path.home() / ".cache" / "ray-serve-cluster"))
    parser.add_argument("--model-dir", type=Path, default=cache / "models" / "full")
    parser.add_argument("--shapes", default="step,spike,ramp")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "autoscaling" / "results.json")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the run changes directory below
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    shipped = policy_config(args.model_dir, "slo", args.min_replicas, args.max_replicas)
    slo_app = next(a for a in shipped["applications"] if a["name"] == "sentiment")
    slo_s = slo_app["deployments"][0]["autoscaling_config"]["policy"]["policy_kwargs"]["p95_ms"]
    slo_s /= 1000
    results: dict[str, Any] = {
        "slo_s": slo_s,
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
    }
    os.chdir(work)  # Ray puts the driver's directory first on its workers' sys.path
    cluster = RayCluster(work, {**FAST_PATH, **read_env(OVERHEAD_ENV)})
    try:
        for shape in args.shapes.split(","):
            results[shape] = {}
            for policy in ("default", "slo"):
                config = policy_config(args.model_dir, policy, args.min_replicas, args.max_replicas)
                cluster.deploy(f"autoscaling-{policy}", copy.deepcopy(config))
                settle(args.min_replicas)
                log(f"{shape}, {policy} policy")
                timeline, record, started = drive(shape, work, f"{shape}-{policy}")
                run = summarize(timeline, record, started, shape_timing(shape)[1], slo_s)
                results[shape][policy] = run
                log(
                    f"  SLO attainment {run['slo_attainment']}, {run['replica_seconds']} "
                    f"replica-s, first scale-up {run['first_scale_up_s']} s, "
                    f"{run['scale_events']} scale events, {run['failed']} of "
                    f"{run['requests']} failed"
                )
            picture(shape, results[shape], slo_s, work / f"{shape}.png")
    finally:
        cluster.close()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
