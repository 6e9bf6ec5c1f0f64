"""Ray's own CPU, by process, with Ray's defaults and with images/ray-overhead.env.

Deploys the benchmark's sentiment application (benchmark/bench/ours.py, b) on a local one-node Ray
cluster twice, once per setting, and measures each Ray process's CPU while idle (in % of one
core) and per answered request under closed-loop load. Writes JSON to --out.

    python benchmark/ray_overhead.py --out build/benchmark/ray_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench.cluster import FAST_PATH, OVERHEAD_ENV, RayCluster  # noqa: E402
from bench.common import HTTP_PORT, ROOT, log, make_texts, read_env, write_bodies  # noqa: E402
from bench.load_levels import idle_cpu, levels  # noqa: E402
from bench.ours import MODEL_PATH, ours_config  # noqa: E402


def measure(work: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cluster = RayCluster(work, {**FAST_PATH, **env})
    try:
        cluster.deploy("ours", ours_config(args.model_dir, os.cpu_count() or 1))
        idle = idle_cpu(args.idle_seconds)
        url = f"http://127.0.0.1:{HTTP_PORT}{MODEL_PATH}"
        bodies = write_bodies(work / "plain.json", make_texts(256, words=26))
        loaded = levels(url, bodies, args, True, [args.concurrency])["levels"][0]
    finally:
        cluster.close()
    return {"env": env, "idle_cpu_pct": idle, "load": loaded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("AIRGAP_CACHE_DIR", Path.home() / ".cache" / "ray-serve-cluster"))
    parser.add_argument("--model-dir", type=Path, default=cache / "models" / "full")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "benchmark" / "ray_overhead.json"
    )
    args = parser.parse_args(argv)
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, env in (
        ("ray defaults", {}),
        ("images/ray-overhead.env", read_env(OVERHEAD_ENV)),
    ):
        log(f"{name}: {env}")
        results[name] = measure(work, env, args)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, result in results.items():
        idle = result["idle_cpu_pct"]
        print(f"{name}: idle {sum(idle.values()):.1f} % of a core {idle}")
        print(f"  under load: {result['load']['rps']:.1f} rps, CPU ms per request "
              f"{result['load'].get('cpu_ms_per_request')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
