"""A/B of two versions of this project's replica code (or settings) on one Ray cluster, alternating.

Each variant's `serve/` ships as a Ray package (`py_modules`), as scripts/deploy.py ships it, so
one cluster serves A, then B, then A again: both see the same minutes of a shared machine. A is
`serve/` at a git ref (default HEAD), B the working tree; `--a-env`/`--b-env` and
`--a-user-config`/`--b-user-config` vary the replicas' environment or user_config instead.
For each round and variant it records b's levels (rps, p50, p99, CPU ms per request by process)
and how full the batches were at the busiest level, and prints the B/A ratios.

    python benchmark/ab.py --a-ref HEAD --rounds 2 --levels 1,16,64 --out build/ab.json
    python benchmark/ab.py --a-ref WORKTREE --b-env OMP_WAIT_POLICY=PASSIVE --levels 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cluster import (
    EXPORT_S,
    FAST_PATH,
    OVERHEAD_ENV,
    RayCluster,
    batch_histogram,
    batch_summary,
)
from bench.common import DASHBOARD_PORT, HTTP_PORT, ROOT, log, make_texts, read_env, write_bodies
from bench.load_levels import levels
from bench.ours import MODEL_PATH, ours_config

CODE_EXCLUDES = ["__pycache__", "*.yaml", "*.pyc"]


def pairs(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE arguments; values parsed as JSON where they are JSON (numbers, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def env_vars(items: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments as a runtime_env's env_vars (strings, as Ray requires)."""
    return {key: value for key, _, value in (item.partition("=") for item in items)}


def code_tree(ref: str, work: Path, name: str) -> Path:
    """A directory whose `serve/` is this project's at `ref` (WORKTREE: the files as they are)."""
    if ref == "WORKTREE":
        return ROOT / "serve"
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "serve"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "serve"


def ship(serve_dir: Path) -> str:
    """`serve_dir` as a content-addressed Ray package, the way scripts/deploy.py ships serve/."""
    from ray.dashboard.modules.dashboard_sdk import SubmissionClient

    client = SubmissionClient(f"http://127.0.0.1:{DASHBOARD_PORT}")
    return client._upload_package_if_needed(
        str(serve_dir), include_gitignore=False, include_parent_dir=True, excludes=CODE_EXCLUDES
    )


def variant_config(
    model_dir: Path, replicas: int, uri: str, env: dict[str, str], user_config: dict, spec: dict
) -> dict[str, Any]:
    config = ours_config(model_dir, replicas, user_config, **spec)
    for app in config["applications"]:
        runtime_env = copy.deepcopy(app.get("runtime_env") or {})
        runtime_env["py_modules"] = [uri]
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        app["runtime_env"] = runtime_env
    return config


def measure(url: str, bodies: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The levels, and the batches of the busiest one (the last)."""
    run = levels(url, bodies, args, True, args.levels[:-1]) if len(args.levels) > 1 else None
    time.sleep(EXPORT_S)  # the batches of the levels before are exported, not counted below
    before = batch_histogram()
    last = levels(url, bodies, args, True, args.levels[-1:])
    time.sleep(EXPORT_S)
    runs = (run["levels"] if run else []) + last["levels"]
    return {"levels": runs, "batches": batch_summary(before, batch_histogram())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("AIRGAP_CACHE_DIR", Path.home() / ".cache" / "ray-serve-cluster"))
    parser.add_argument("--model-dir", type=Path, default=cache / "models" / "full")
    parser.add_argument("--a-ref", default="HEAD", help="git ref of A's serve/, or WORKTREE")
    parser.add_argument("--b-ref", default="WORKTREE", help="git ref of B's serve/, or WORKTREE")
    parser.add_argument("--a-env", nargs="*", default=[], help="KEY=VALUE for A's replicas")
    parser.add_argument("--b-env", nargs="*", default=[], help="KEY=VALUE for B's replicas")
    parser.add_argument("--a-user-config", nargs="*", default=[], help="KEY=VALUE")
    parser.add_argument("--b-user-config", nargs="*", default=[], help="KEY=VALUE")
    parser.add_argument("--spec", nargs="*", default=[], help="KEY=VALUE for both (quantize=int8)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64]
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--replicas", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "ab" / "results.json")
    args = parser.parse_args(argv)
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(work / "bodies.json", make_texts(256, words=26))
    spec = pairs(args.spec)
    variants = {
        "A": (args.a_ref, env_vars(args.a_env), pairs(args.a_user_config)),
        "B": (args.b_ref, env_vars(args.b_env), pairs(args.b_user_config)),
    }
    trees = {name: code_tree(ref, work, f"code-{name}") for name, (ref, _, _) in variants.items()}
    results: dict[str, Any] = {
        "variants": {
            name: {"ref": ref, "env": env, "user_config": user_config}
            for name, (ref, env, user_config) in variants.items()
        },
        "spec": spec,
        "rounds": {"A": [], "B": []},
    }
    url = f"http://127.0.0.1:{HTTP_PORT}{MODEL_PATH}"
    # Ray puts the driver's directory first on its workers' sys.path: from this checkout's root,
    # every variant would import the checkout's serve/ instead of its own package.
    os.chdir(work)
    cluster = RayCluster(work, {**FAST_PATH, **read_env(OVERHEAD_ENV)})
    try:
        uris = {name: ship(tree) for name, tree in trees.items()}
        for round_ in range(args.rounds):
            for name, (_, env, user_config) in variants.items():
                log(f"round {round_ + 1}: {name}")
                config = variant_config(
                    args.model_dir, args.replicas, uris[name], env, user_config, spec
                )
                cluster.deploy(f"ab-{name}", config)
                results["rounds"][name].append(measure(url, bodies, args))
    finally:
        cluster.close()
    results["b/a"] = {}
    for i, clients in enumerate(args.levels):
        median = {
            name: {
                key: statistics.median(r["levels"][i][key] for r in runs)
                for key in ("rps", "p50_ms", "p99_ms")
            }
            for name, runs in results["rounds"].items()
        }
        results["b/a"][clients] = {
            key: round(median["B"][key] / median["A"][key], 3) for key in median["A"]
        }
        log(f"c={clients}: A {median['A']}, B {median['B']}, B/A {results['b/a'][clients]}")
    for name, runs in results["rounds"].items():
        log(f"{name} batches at c={args.levels[-1]}: {[r['batches'] for r in runs]}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
