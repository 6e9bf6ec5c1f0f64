"""a. Raw batched inference in-process: the limit the served systems are measured against."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.common import log
from serve.config import ModelSpec
from serve.models import load_model

RAW_BATCHES = (16, 32)


def raw_worker(
    model_dir: str,
    texts: list[str],
    seconds: float,
    threads: int,
    spec: dict,
    barrier: Any,
    sizes: tuple[int, ...] = RAW_BATCHES,
) -> dict[int, float]:
    """One process of a raw measurement: the model on `threads` intra-op threads, then each batch
    size in `sizes` for at least `seconds`, started together with the other processes
    (`barrier`). Sequences per second over the time the whole batches took (the last one ends
    past `seconds`)."""
    model = load_model(ModelSpec(task="sentiment", source=f"{model_dir}/sentiment", **spec))
    model.set_threads(threads)
    rates: dict[int, float] = {}
    for batch in sizes:
        batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        model.predict(batches[0])  # warm-up at this shape
        barrier.wait()
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            chunk = batches[count // batch % len(batches)]
            model.predict(chunk)
            count += len(chunk)
        rates[batch] = count / elapsed
    return rates


def raw_layout(
    model_dir: Path,
    texts: list[str],
    seconds: float,
    processes: int,
    threads: int,
    spec: dict,
    sizes: tuple[int, ...] = RAW_BATCHES,
) -> dict[int, float]:
    """seq/s of `processes` side by side on `threads` threads each, by batch size."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        work = (str(model_dir), texts, seconds, threads, spec, barrier, sizes)
        rates = pool.starmap(raw_worker, [work] * processes, chunksize=1)
    return {batch: sum(r[batch] for r in rates) for batch in sizes}


def raw_limit(
    model_dir: Path,
    texts: list[str],
    seconds: float,
    layouts: list[tuple[int, int]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The limit: the better of one process on every core and one 1-thread process per core
    side by side (or only `layouts`: (processes, threads) pairs), each at its best batch size."""
    cores = os.cpu_count() or 1
    trials = []
    for processes, threads in layouts or [(1, cores), (cores, 1)]:
        for batch, rate in raw_layout(model_dir, texts, seconds, processes, threads, spec).items():
            trial = {"processes": processes, "threads": threads, "batch": batch}
            trials.append({**trial, "seq_per_s": round(rate, 2)})
            log(f"  {spec or 'fp32'}: {trial}: {rate:.1f} seq/s")
    best = max(trials, key=lambda t: t["seq_per_s"])
    return {
        **best,
        "layout": f"{best['processes']} x {best['threads']} threads",
        "trials": trials,
        **spec,
    }


def raw_slice(model_dir: Path, texts: list[str], seconds: float, limit: dict[str, Any]) -> float:
    """seq/s of the layout and batch size that won `limit` (a raw_limit result), once more: a
    short slice taken right beside a served measurement, so both see the same machine."""
    spec = {k: limit[k] for k in ("quantize", "runtime") if k in limit}
    rates = raw_layout(
        model_dir, texts, seconds, limit["processes"], limit["threads"], spec, (limit["batch"],)
    )
    rate = round(rates[limit["batch"]], 2)
    log(f"  a slice, {spec or 'fp32'} ({limit['layout']}, batch {limit['batch']}): {rate} seq/s")
    return rate
