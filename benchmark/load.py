"""HTTP load in its own process, bounded in time: the benchmark's client.

Closed loop (`--concurrency N`): N workers each send a request, wait for the answer, send the next.
Open loop (`--rate R`): a request starts every 1/R s whatever the answers do, which is how tail
latency at a given share of saturation is measured. Either runs `--warmup` then `--seconds`; the
answers that arrive in the measured window count (throughput = those / seconds). Prints one JSON
object: requests, errors, rps, latency percentiles in ms and this client's own CPU time per answer
(it shares the cores with the server under test). Only 127.0.0.1 is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import aiohttp

MAX_IN_FLIGHT = 1024


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Recorder:
    def __init__(self, warmup: float, seconds: float) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.measure_from = self.start + warmup
        self.stop_at = self.measure_from + seconds
        self.seconds = seconds
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.answered = 0  # warm-up included: what the servers' CPU time is divided by

    async def send(self, session: aiohttp.ClientSession, url: str, body: dict) -> None:
        sent = time.perf_counter()
        try:
            async with session.post(url, json=body) as resp:
                await resp.read()
                status: int | str = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        done = time.perf_counter()
        self.answered += 1
        if not self.measure_from <= done <= self.stop_at:  # completions in the window count
            return
        if status == 200:
            self.latencies.append((done - sent) * 1000)
        else:
            self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def summary(self, **params: float) -> dict:
        self.latencies.sort()
        cpu = time.process_time() - self.cpu_start
        return {
            **params,
            "requests": len(self.latencies),
            "answered": self.answered,
            "errors": self.errors,
            "rps": len(self.latencies) / self.seconds,
            "p50_ms": percentile(self.latencies, 0.50),
            "p99_ms": percentile(self.latencies, 0.99),
            "client_cpu_ms_per_request": round(cpu * 1000 / max(self.answered, 1), 2),
        }


def session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=limit)
    )


async def closed_loop(
    url: str, bodies: list[dict], concurrency: int, warmup: float, seconds: float
) -> dict:
    recorder = Recorder(warmup, seconds)

    async def worker(client: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while time.perf_counter() < recorder.stop_at:
            await recorder.send(client, url, bodies[i % len(bodies)])
            i += concurrency

    async with session(concurrency) as client:
        await asyncio.gather(*(worker(client, k) for k in range(concurrency)))
    return recorder.summary(concurrency=concurrency)


async def open_loop(
    url: str, bodies: list[dict], rate: float, warmup: float, seconds: float
) -> dict:
    recorder = Recorder(warmup, seconds)
    tasks = []
    async with session(MAX_IN_FLIGHT) as client:
        k = 0
        while (due := recorder.start + k / rate) < recorder.stop_at:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(recorder.send(client, url, bodies[k % len(bodies)])))
            k += 1
        await asyncio.gather(*tasks)
    return recorder.summary(rate=rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="JSON file: a list of request bodies")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if urlparse(args.url).hostname != "127.0.0.1":
        parser.error("load goes to 127.0.0.1 only")
    with open(args.bodies) as f:
        bodies = json.load(f)
    if args.rate:
        run = open_loop(args.url, bodies, args.rate, args.warmup, args.seconds)
    else:
        run = closed_loop(args.url, bodies, args.concurrency, args.warmup, args.seconds)
    result = asyncio.run(run)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
