"""The ratios the targets are stated in, and the table a run prints."""

from __future__ import annotations

from typing import Any


def ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


def summarize(results: dict[str, Any]) -> None:
    """The ratios the targets are stated in, from one run's measurements."""
    sat = {k: v.get("saturation_rps") for k, v in results.items() if isinstance(v, dict)}
    fair = {k: results.get(k, {}) for k in ("fair", "fair_int8", "fair_ort_int8")}
    results["a_raw_mean_seq_per_s"] = fair["fair"].get("a_mean_seq_per_s")
    b, b8, bort, c, d, e = (
        sat.get(k)
        for k in ("b_ours", "b_ours_int8", "b_ours_ort_int8", "c_seed", "d_fastapi", "e_bentoml")
    )
    lb = results.get("b_lb_pair", {})
    results["ratios"] = {
        # b's busiest level against a measured right before and right after it (run.py's fair).
        **{
            name: ratio(fair[key].get("b_rps"), fair[key].get("a_mean_seq_per_s"))
            for name, key in (
                ("b/a", "fair"),
                ("b_int8/a_int8", "fair_int8"),
                ("b_ort_int8/a_ort_int8", "fair_ort_int8"),
            )
        },
        "b/c": ratio(b, c),
        "b_int8/c": ratio(b8, c),
        "b_ort_int8/c": ratio(bort, c),
        "b/d": ratio(b, d),
        "b/e": ratio(b, e),
        "b/max(d,e)": ratio(b, max(filter(None, (d, e)), default=None)),
        "b_predict/b": ratio(sat.get("b_ours_predict"), b),
        "b_lb/b_direct": ratio(lb.get("lb_rps"), lb.get("direct_rps")),
    }
    open_loop = results.get("b_ours_70pct", {})
    results["tail_at_70pct"] = ratio(open_loop.get("p99_ms"), open_loop.get("p50_ms"))
    for key in ("noop", "noop_model_route"):
        results[f"{key}_p50_ms"] = (results.get(key, {}).get("levels") or [{}])[0].get("p50_ms")
    results["noop_p50_model_route/predict"] = ratio(
        results["noop_model_route_p50_ms"], results["noop_p50_ms"]
    )
    # One client on b and on e in alternating slices (bench/lone.py), for torch and ORT int8.
    lone = {
        f"{system}{suffix}": (results.get(key, {}).get(system, {}).get("levels") or [{}])[0].get(
            "p50_ms"
        )
        for key, suffix in (("lone", ""), ("lone_ort_int8", "_ort_int8"))
        for system in ("b", "e")
    }
    results["lone_p50_ms"] = lone
    results["lone_p50_b/e"] = ratio(lone["b"], lone["e"])
    results["lone_p50_b_ort/e_ort"] = ratio(lone["b_ort_int8"], lone["e_ort_int8"])
    results["batches"] = {k: v.get("batches") for k, v in fair.items() if v}


def cell(level: dict | None) -> str:
    return f"{level['rps']:.1f} / {level['p50_ms']:.0f} / {level['p99_ms']:.0f}" if level else "-"


def print_table(results: dict, levels_: list[int]) -> None:
    rows = [
        ("a. raw batched (limit)", "a_raw"),
        ("a. raw batched, torch int8", "a_raw_int8"),
        ("a. raw batched, ONNX Runtime int8", "a_raw_ort_int8"),
        ("b. this project, /models/sentiment/predict", "b_ours"),
        ("b. this project, /predict (through the Router)", "b_ours_predict"),
        ("b. this project, torch int8", "b_ours_int8"),
        ("b. this project, ONNX Runtime int8", "b_ours_ort_int8"),
        ("c. seed article", "c_seed"),
        ("d. FastAPI + uvicorn", "d_fastapi"),
        ("e. BentoML", "e_bentoml"),
        ("no-op deployment, its own route", "noop_model_route"),
        ("no-op deployment behind the Router", "noop"),
    ]
    head = " | ".join(f"c={c} rps / p50 / p99 ms" for c in levels_)
    print(f"\n| system | saturation rps | {head} |")
    print("|---|---|" + "---|" * len(levels_))
    for label, key in rows:
        r = results.get(key)
        if not r:
            continue
        if "error" in r:
            print(f"| {label} | failed: {r['error'][:60]} |" + " |" * len(levels_))
        elif "seq_per_s" in r:
            best = f"{r['seq_per_s']:.1f} seq/s ({r['layout']}, batch {r['batch']})"
            print(f"| {label} | {best} |" + " - |" * len(levels_))
        else:
            at = {x["concurrency"]: x for x in r["levels"]}
            cells = " | ".join(cell(at.get(c)) for c in levels_)
            print(f"| {label} | {r['saturation_rps']:.1f} | {cells} |")
    print("\nratios: " + ", ".join(f"{k} = {v}" for k, v in results["ratios"].items()))
    print(
        f"p99/p50 at 70% of b's saturation: {results['tail_at_70pct']}; no-op p50 on its own "
        f"route {results['noop_model_route_p50_ms']} ms, through /predict "
        f"{results['noop_p50_ms']} ms; one client's p50, b vs e: {results['lone_p50_ms']}"
    )
    fair = {k: results.get(k) for k in ("fair", "fair_int8", "fair_ort_int8")}
    for key, run in fair.items():
        if run and "b_rps" in run:
            print(
                f"{key}: b {run['b_rps']:.1f} rps at {run['concurrency']} clients between a "
                f"{run['a_seq_per_s']} seq/s; batches {run['batches']}"
            )
    print()
