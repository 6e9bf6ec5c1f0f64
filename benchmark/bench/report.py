"""The ratios the targets are stated in, and the table a run prints."""

from __future__ import annotations

from typing import Any


def ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


def summarize(results: dict[str, Any]) -> None:
    """The ratios the targets are stated in, from one run's measurements."""
    sat = {k: v.get("saturation_rps") for k, v in results.items() if isinstance(v, dict)}
    raws = [results.get(k, {}).get("seq_per_s") for k in ("a_raw", "a_raw_end")]
    raw = sum(raws) / len(raws) if all(raws) else None
    results["a_raw_mean_seq_per_s"] = raw
    raw_int8 = results.get("a_raw_int8", {}).get("seq_per_s")
    raw_ort = results.get("a_raw_ort_int8", {}).get("seq_per_s")
    b, b8, bort, c, d, e, eort = (
        sat.get(k)
        for k in (
            "b_ours", "b_ours_int8", "b_ours_ort_int8", "c_seed", "d_fastapi", "e_bentoml",
            "e_bentoml_ort_int8",
        )
    )  # fmt: skip
    lb = results.get("b_lb_pair", {})
    results["ratios"] = {
        "b/a": ratio(b, raw),
        "b_int8/a_int8": ratio(b8, raw_int8),
        "b_ort_int8/a_ort_int8": ratio(bort, raw_ort),
        "b/c": ratio(b, c),
        "b_int8/c": ratio(b8, c),
        "b_ort_int8/c": ratio(bort, c),
        "b/d": ratio(b, d),
        "b/e": ratio(b, e),
        "b_ort_int8/e_ort_int8": ratio(bort, eort),
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
    lone = {
        k: (results.get(k, {}).get("levels") or [{}])[0].get("p50_ms")
        for k in ("b_ours", "e_bentoml", "b_ours_ort_int8", "e_bentoml_ort_int8")
    }
    results["lone_p50_ms"] = lone
    results["lone_p50_b/e"] = ratio(lone["b_ours"], lone["e_bentoml"])
    results["lone_p50_b_ort/e_ort"] = ratio(lone["b_ours_ort_int8"], lone["e_bentoml_ort_int8"])


def cell(level: dict | None) -> str:
    return f"{level['rps']:.1f} / {level['p50_ms']:.0f} / {level['p99_ms']:.0f}" if level else "-"


def print_table(results: dict, levels_: list[int]) -> None:
    rows = [
        ("a. raw batched (limit), start", "a_raw"),
        ("a. raw batched (limit), end", "a_raw_end"),
        ("a. raw batched, torch int8", "a_raw_int8"),
        ("a. raw batched, ONNX Runtime int8", "a_raw_ort_int8"),
        ("b. this project, /models/sentiment/predict", "b_ours"),
        ("b. this project, /predict (through the Router)", "b_ours_predict"),
        ("b. this project, torch int8", "b_ours_int8"),
        ("b. this project, ONNX Runtime int8", "b_ours_ort_int8"),
        ("c. seed article", "c_seed"),
        ("d. FastAPI + uvicorn", "d_fastapi"),
        ("e. BentoML", "e_bentoml"),
        ("e. BentoML, ONNX Runtime int8", "e_bentoml_ort_int8"),
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
        f"{results['noop_p50_ms']} ms; one client's p50, b vs e: {results['lone_p50_ms']}\n"
    )
