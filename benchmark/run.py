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
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.bento import bento_levels, bento_server
from bench.cluster import (
    CLASSIC_PATH,
    EXPORT_S,
    FAST_PATH,
    OVERHEAD_ENV,
    RayCluster,
    batch_histogram,
    batch_summary,
)
from bench.common import HTTP_PORT, ROOT, log, make_texts, read_env, write_bodies
from bench.load_levels import idle_cpu, levels, load
from bench.lone import interleaved
from bench.noop import noop_config
from bench.ours import MODEL_PATH, ours_config, through_lb
from bench.plain import plain
from bench.raw import raw_limit, raw_slice
from bench.report import print_table, summarize
from bench.seed import seed_config

# Throughput through the stack's load balancer may be at most 5 % below b direct; the run exits 1
# when it is not.
LB_MIN_RATIO = 0.95
# torch int8 runs best at batch 16 (a's trials: docs/benchmark.md); b int8 is deployed with it.
INT8_BATCH = 16
# int8 and ONNX Runtime int8 are measured in the layout that won fp32 in every run: one
# 1-thread process per core (docs/benchmark.md); fp32 tries both.
ONE_PER_CORE = [(os.cpu_count() or 1, 1)]


def start(
    results: dict, key: str, stack: ExitStack, make: Callable[[], AbstractContextManager[Any]]
) -> Any:
    """Enter a server's context on `stack`; a server that does not come up is recorded under
    `key` like a failed step, and None returned."""
    try:
        return stack.enter_context(make())
    except Exception as exc:
        log(f"{key} did not start: {exc}")
        results[key] = {"error": str(exc)}
        return None


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
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
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
            lambda: raw_limit(
                args.model_dir, texts, args.raw_seconds, ONE_PER_CORE, quantize="int8"
            ),
        )
    if "ort" not in skip:
        step(
            results,
            "a_raw_ort_int8",
            lambda: raw_limit(
                args.model_dir,
                texts,
                args.raw_seconds,
                ONE_PER_CORE,
                runtime="onnxruntime",
                quantize="int8",
            ),
        )

    if "d" not in skip:
        log("d. FastAPI + uvicorn, one process")
        step(results, "d_fastapi", lambda: plain(work, model_env, plain_bodies, args))

    url = f"http://127.0.0.1:{HTTP_PORT}"
    model_url = f"{url}{MODEL_PATH}"
    results["serve_paths"] = {
        "fast": {**FAST_PATH, **read_env(OVERHEAD_ENV)},
        "classic": CLASSIC_PATH,
    }

    def fair(key: str, limit_key: str) -> dict[str, Any]:
        """b's busiest level once more, between two slices of a in the layout and batch size
        that won `limit_key`, so that b/a compares the same minute of a shared machine; and how
        full b's batches were meanwhile."""
        limit = results[limit_key]
        busiest = max(results[key]["levels"], key=lambda r: r["rps"])["concurrency"]
        previous = time.monotonic()  # b's levels just ended
        before = raw_slice(args.model_dir, texts, args.raw_seconds, limit)
        time.sleep(max(0.0, EXPORT_S - (time.monotonic() - previous)))  # their batches are out
        histogram = batch_histogram()
        run = load(model_url, plain_bodies, args.warmup, args.seconds, concurrency=busiest)
        ended = time.monotonic()
        after = raw_slice(args.model_dir, texts, args.raw_seconds, limit)
        time.sleep(max(0.0, EXPORT_S - (time.monotonic() - ended)))
        batches = batch_summary(histogram, batch_histogram())
        log(f"  b's batches at {busiest} clients: {batches}")
        return {
            "concurrency": busiest,
            "b_rps": run["rps"],
            "a_seq_per_s": [before, after],
            "a_mean_seq_per_s": round((before + after) / 2, 2),
            "batches": batches,
            "run": run,
        }

    def lone(server_key: str, key: str, env: dict[str, str]) -> None:
        """One client on b as deployed now and on a new e server (`env`), in alternating slices.
        A new e: after its busiest level, BentoML's dispatcher has learned to wait for company,
        and keeps a lone request waiting for it (about 350 ms) for a while."""
        with ExitStack() as bento_up:
            peer = start(
                results, server_key, bento_up, lambda: bento_server(work, env, texts, args)
            )
            if peer:
                pair = {"b": (model_url, plain_bodies), "e": (peer[0], peer[1])}
                step(results, key, lambda: interleaved(pair))

    cluster: RayCluster | None = None
    try:
        if "e" not in skip:
            log("e. BentoML with adaptive batching")
            with ExitStack() as bento_up:
                peer = start(
                    results,
                    "e_bentoml",
                    bento_up,
                    lambda: bento_server(work, model_env, texts, args),
                )
                if peer:
                    step(results, "e_bentoml", lambda: bento_levels(*peer, args))
        log(f"b. this project: HAProxy -> sentiment x{args.replicas} on {MODEL_PATH}")
        cluster = RayCluster(work, {**FAST_PATH, **read_env(OVERHEAD_ENV)})
        cluster.deploy("ours", ours_config(args.model_dir, args.replicas))
        if "e" not in skip:
            log("b and a new e, one client each, in alternating slices")
            lone("lone", "lone", model_env)
        step(results, "ray_idle_cpu_pct", idle_cpu)
        step(results, "b_ours", lambda: levels(model_url, plain_bodies, args, True))
        if "seq_per_s" in results.get("a_raw", {}) and "levels" in results["b_ours"]:
            log("a right before and right after b's busiest level")
            step(results, "fair", lambda: fair("b_ours", "a_raw"))
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
            log(f"b with int8 dynamic quantization (torch), batches of {INT8_BATCH}")
            cluster.deploy(
                "ours",
                ours_config(
                    args.model_dir, args.replicas, {"max_batch_size": INT8_BATCH}, quantize="int8"
                ),
            )
            step(results, "b_ours_int8", lambda: levels(model_url, plain_bodies, args, True,
                                                        args.levels[1:]))  # fmt: skip
            if "seq_per_s" in results.get("a_raw_int8", {}):
                step(results, "fair_int8", lambda: fair("b_ours_int8", "a_raw_int8"))
        if "ort" not in skip:
            log("b with ONNX Runtime, int8")
            ort = {"runtime": "onnxruntime", "quantize": "int8"}
            cluster.deploy("ours", ours_config(args.model_dir, args.replicas, **ort))
            if "e" not in skip:
                log("b and e on ONNX Runtime int8, one client each, in alternating slices")
                ort_env = {**model_env, "BENCH_RUNTIME": "onnxruntime"}
                lone("e_bentoml_ort_int8", "lone_ort_int8", ort_env)
            step(
                results,
                "b_ours_ort_int8",
                lambda: levels(model_url, plain_bodies, args, True, args.levels[1:]),
            )
            if "seq_per_s" in results.get("a_raw_ort_int8", {}):
                step(results, "fair_ort_int8", lambda: fair("b_ours_ort_int8", "a_raw_ort_int8"))
        log("no-op: a model deployment that does no work, on its own route and behind the Router")
        cluster.deploy("noop", noop_config(args.model_dir))
        step(
            results,
            "noop_model_route",
            lambda: levels(model_url, plain_bodies, args, True, [1, 16]),
        )
        step(results, "noop", lambda: levels(f"{url}/predict", ours_bodies, args, True, [1, 16]))
    finally:
        if cluster is not None:
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
