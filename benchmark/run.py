"""Side-by-side serving benchmark: the same sentiment model, the same cores, one run.

Measures saturation throughput and p50/p99 latency at fixed concurrency for
  a. raw batched inference (the limit): the better of one process on every core and one 1-thread
     process per core side by side, each at its best batch size,
  b. this project's deployment on a local Ray cluster, on the model's own route
     (`/models/sentiment/predict`) and through the Router (`/predict`),
  c. the seed article's deployment (2 replicas, no batching),
  d. FastAPI + uvicorn in one process,
  e. BentoML with adaptive batching (its own virtualenv),
plus a and b with torch int8 and ONNX Runtime int8, b's tail latency at 70% of its saturation
(open loop), b through the stack's load balancer (lb/haproxy.cfg) against b direct, Ray's idle
CPU by process, and the no-op overhead on both routes. b runs on Serve's high-throughput path,
as compose ships it (HAProxy ingress, direct gRPC between replicas); the seed (c) runs on the
classic proxy path, which is what the seed article deploys. Load comes from benchmark/load.py in
a separate process, to 127.0.0.1 only. Prints a table with the ratios and writes them to --out
as JSON.

    python benchmark/run.py --model-dir ~/.cache/ray-serve-cluster/models/full
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.bento import bento
from bench.cluster import CLASSIC_PATH, FAST_PATH, OVERHEAD_ENV, RayCluster
from bench.common import HTTP_PORT, ROOT, log, make_texts, read_env, write_bodies
from bench.load_levels import idle_cpu, levels, load
from bench.noop import noop_config
from bench.ours import MODEL_PATH, ours_config, through_lb
from bench.plain import plain
from bench.raw import raw_limit
from bench.report import print_table, summarize
from bench.seed import seed_config

# Throughput through the stack's load balancer may be at most 5 % below b direct; the run exits 1
# when it is not.
LB_MIN_RATIO = 0.95


def step(results: dict, key: str, fn: Callable[[], Any]) -> None:
    """Run one measurement; a failure is recorded with its reason instead of ending the run."""
    started = time.perf_counter()
    try:
        results[key] = fn()
    except Exception as exc:  # reported in the table and the JSON
        log(f"{key} failed: {exc}")
        results[key] = {"error": str(exc)}
    log(f"{key}: {time.perf_counter() - started:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("AIRGAP_CACHE_DIR", Path.home() / ".cache" / "ray-serve-cluster"))
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=cache / "models" / "full",
        help="a directory with sentiment/ (DistilBERT-base size)",
    )
    parser.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="closed-loop concurrency levels",
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument(
        "--raw-seconds", type=float, default=6.0, help="seconds per in-process (a) measurement"
    )
    parser.add_argument(
        "--replicas", type=int, default=os.cpu_count(), help="sentiment replicas in b (1 CPU each)"
    )
    parser.add_argument("--skip", default="", help="comma-separated: d,e,int8,ort,lb")
    parser.add_argument("--bento-venv", type=Path, default=cache / "bentoml-venv")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "benchmark" / "results.json")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if not (args.model_dir / "sentiment" / "config.json").exists():
        parser.error(f"no sentiment model in {args.model_dir} (scripts/make_test_models.py)")
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    texts = make_texts(256, words=26)
    ours_bodies = write_bodies(work / "ours.json", texts, model="sentiment")
    plain_bodies = write_bodies(work / "plain.json", texts)
    model_env = {"BENCH_SENTIMENT_MODEL": str(args.model_dir / "sentiment")}
    results: dict[str, Any] = {"cpus": os.cpu_count(), "texts": len(texts)}

    log("a. raw batched inference: one process on all cores; one 1-thread process per core")
    step(results, "a_raw", lambda: raw_limit(args.model_dir, texts, args.raw_seconds))
    if "int8" not in skip:
        step(
            results,
            "a_raw_int8",
            lambda: raw_limit(args.model_dir, texts, args.raw_seconds, quantize="int8"),
        )
    if "ort" not in skip:
        step(
            results,
            "a_raw_ort_int8",
            lambda: raw_limit(
                args.model_dir, texts, args.raw_seconds, runtime="onnxruntime", quantize="int8"
            ),
        )

    if "d" not in skip:
        log("d. FastAPI + uvicorn, one process")
        step(results, "d_fastapi", lambda: plain(work, model_env, plain_bodies, args))

    if "e" not in skip:
        log("e. BentoML with adaptive batching")
        step(results, "e_bentoml", lambda: bento(work, model_env, texts, args))
        if "ort" not in skip:
            log("e on ONNX Runtime int8, this project's model code")
            step(
                results,
                "e_bentoml_ort_int8",
                lambda: bento(work, {**model_env, "BENCH_RUNTIME": "onnxruntime"}, texts, args),
            )

    url = f"http://127.0.0.1:{HTTP_PORT}"
    model_url = f"{url}{MODEL_PATH}"
    results["serve_paths"] = {
        "fast": {**FAST_PATH, **read_env(OVERHEAD_ENV)},
        "classic": CLASSIC_PATH,
    }
    cluster = RayCluster(work, {**FAST_PATH, **read_env(OVERHEAD_ENV)})

    def ours(concurrency: list[int] | None = None, **spec: Any) -> dict:
        cluster.deploy("ours", ours_config(args.model_dir, args.replicas, **spec))
        return levels(model_url, plain_bodies, args, True, concurrency)

    try:
        log(f"b. this project: HAProxy -> sentiment x{args.replicas} on /models/sentiment/predict")
        cluster.deploy("ours", ours_config(args.model_dir, args.replicas))
        step(results, "ray_idle_cpu_pct", idle_cpu)
        step(results, "b_ours", lambda: levels(model_url, plain_bodies, args, True))
        log("b through the Router: HAProxy -> Router -> sentiment, /predict, at the busiest level")
        step(
            results,
            "b_ours_predict",
            lambda: levels(f"{url}/predict", ours_bodies, args, True, args.levels[-1:]),
        )
        sat = results["b_ours"].get("saturation_rps")
        if sat:
            log("b at 70% of its saturation, open loop")
            step(
                results,
                "b_ours_70pct",
                lambda: load(
                    model_url, plain_bodies, args.warmup, args.seconds * 2, rate=round(0.7 * sat, 2)
                ),
            )
        if "lb" not in skip:
            log("b through the load balancer and direct, alternately, at the busiest level")
            step(results, "b_lb_pair", lambda: through_lb(work, MODEL_PATH, plain_bodies, args))
        if "int8" not in skip:
            log("b with int8 dynamic quantization (torch)")
            step(results, "b_ours_int8", lambda: ours(args.levels[1:], quantize="int8"))
        if "ort" not in skip:
            log("b with ONNX Runtime, int8")
            step(
                results,
                "b_ours_ort_int8",
                lambda: ours(args.levels, runtime="onnxruntime", quantize="int8"),
            )
        log("no-op: a model deployment that does no work, on its own route and behind the Router")
        cluster.deploy("noop", noop_config(args.model_dir))
        step(
            results,
            "noop_model_route",
            lambda: levels(model_url, plain_bodies, args, True, [1, 16]),
        )
        step(results, "noop", lambda: levels(f"{url}/predict", ours_bodies, args, True, [1, 16]))
    finally:
        cluster.close()

    log("c. the seed article's deployment (2 replicas, no batching), on Serve's classic proxy path")
    cluster = RayCluster(work, CLASSIC_PATH)
    try:

        def seed() -> dict:
            cluster.deploy("seed", seed_config(args.model_dir))
            return levels(f"{url}/classify", plain_bodies, args)

        step(results, "c_seed", seed)
    finally:
        cluster.close()

    # The machine is shared: the limit is measured again at the end and the two are averaged.
    log("a. raw batched inference again, in the layout that won at the start")
    start = results.get("a_raw", {})
    won = [(start["processes"], start["threads"])] if "processes" in start else None
    step(results, "a_raw_end", lambda: raw_limit(args.model_dir, texts, args.raw_seconds, won))
    summarize(results)
    results["wall_s"] = round(time.perf_counter() - started)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args.levels)
    log(f"results: {args.out} ({results['wall_s']} s)")
    lb_ratio = results["ratios"]["b_lb/b_direct"]
    if lb_ratio is not None and lb_ratio < LB_MIN_RATIO:
        log(f"the load balancer costs more than its budget: b_lb/b_direct {lb_ratio} < "
            f"{LB_MIN_RATIO}")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
