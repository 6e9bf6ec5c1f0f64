"""A replica's batch dispatcher: one queue, one consumer, one batch at a time.

Requests queue while the model runs; the moment a batch ends, the consumer takes everything that
waits (up to the batch size) in the same step as it marks the model busy, so no request that
arrives in between can start a small batch of its own.

A batch that could start now may wait for company. A batch of n costs `intercept + slope * n`
seconds (fitted online over recent batches). A request that misses it waits for the whole batch;
one that joins it adds only `slope`. Waiting a moment for the next request costs each of the n
waiting requests that moment; so the batch waits while the next request is expected within
`intercept / n + slope`, the time it would lose by missing the batch, per request waiting. It
stops at a pause in the arrivals longer than twice their usual gap, or than `max_wait_s / n`
(a pause costs the queue at most `max_wait_s` request-seconds), and after `max_wait_s` at most.
It waits only after a batch that had requests arrive while it ran: a lone client, whose next
request comes only after its answer, never waits. BentoML's dispatcher weighs the same costs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

TICK_S = 0.001  # how often a batch waiting for company looks again


@dataclass
class BatchTimeModel:
    """Batch time in seconds as `intercept + slope * size`, least squares over recent batches."""

    window: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=64))

    def observe(self, size: int, seconds: float) -> None:
        self.window.append((size, seconds))

    def fit(self) -> tuple[float, float] | None:
        """(intercept, slope), or None until batches of two sizes were seen."""
        n = len(self.window)
        if n < 2:
            return None
        mean_x = sum(x for x, _ in self.window) / n
        mean_y = sum(y for _, y in self.window) / n
        var = sum((x - mean_x) ** 2 for x, _ in self.window)
        if var == 0:
            return None
        slope = sum((x - mean_x) * (y - mean_y) for x, y in self.window) / var
        slope = max(slope, 0.0)
        return max(mean_y - slope * mean_x, 0.0), slope


@dataclass
class ArrivalRate:
    """The usual gap between arrivals: the median of the last few, so that the long pause
    between two bursts does not hide the short gaps within one."""

    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=8))
    last: float | None = None

    def arrive(self, now: float) -> None:
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def usual_gap_s(self) -> float:
        if not self.gaps:
            return float("inf")
        return sorted(self.gaps)[len(self.gaps) // 2]

    def silence_s(self, now: float) -> float:
        return float("inf") if self.last is None else now - self.last


@dataclass
class Waiting(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    arrived: float


class Dispatcher(Generic[Item, Result]):
    """Hands queued items to `run` in batches; `submit` returns the item's own result.

    `run` takes a list and returns one result per item, in order; an exception fails every
    item of that batch. An item whose caller gave up (its future cancelled, as `wait_for` does
    on timeout) is dropped before its batch starts.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        max_batch_size: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.queue: deque[Waiting[Item, Result]] = deque()
        self.batch_time = BatchTimeModel()
        self.arrivals = ArrivalRate()
        self.busy = False
        self.arrived_while_busy = 0  # requests that came in while the current batch ran
        self.company = False  # whether the last batch had requests arrive while it ran
        self.wakeup = asyncio.Event()
        self.consumer: asyncio.Task[None] | None = None

    def configure(self, max_batch_size: int, max_wait_s: float) -> None:
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s

    async def submit(self, item: Item) -> Result:
        now = self.clock()
        self.arrivals.arrive(now)
        if self.busy:
            self.arrived_while_busy += 1
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.queue.append(Waiting(item, future, now))
        if self.consumer is None or self.consumer.done():
            self.consumer = asyncio.create_task(self._consume())
        self.wakeup.set()
        return await future

    def should_wait(self, now: float, since: float | None = None) -> bool:
        """Whether the batch the queue holds now should wait for one more request; `since`:
        when this batch began to wait (None: it has not yet)."""
        size = len(self.queue)
        if size == 0 or size >= self.max_batch_size or self.max_wait_s <= 0 or not self.company:
            return False
        start = now if since is None else since
        if now - start + TICK_S > self.max_wait_s:
            return False
        fitted = self.batch_time.fit()
        if fitted is None:
            return False
        intercept, slope = fitted
        gap = self.arrivals.usual_gap_s()
        # A pause in the arrivals costs every waiting request its length: the queue sits through
        # one of at most max_wait_s request-seconds, or twice the usual gap.
        last = self.arrivals.last
        silence = now - (start if last is None else max(last, start))
        return gap < intercept / size + slope and silence <= max(
            2 * gap + TICK_S, self.max_wait_s / size
        )

    def take(self) -> list[Waiting[Item, Result]]:
        """The next batch: every live item up to the batch size, oldest first."""
        batch: list[Waiting[Item, Result]] = []
        while self.queue and len(batch) < self.max_batch_size:
            waiting = self.queue.popleft()
            if not waiting.future.done():
                batch.append(waiting)
        return batch

    async def _consume(self) -> None:
        while True:
            self.wakeup.clear()
            # Counted from the first look after the replica's loop has run: the answers of the
            # batch that just ended go out first, and their clients' next requests follow.
            since: float | None = None
            while self.queue and self.should_wait(self.clock(), since):
                await asyncio.sleep(TICK_S)
                since = self.clock() if since is None else since
            batch = self.take()
            if not batch:
                if not self.queue:
                    await self.wakeup.wait()
                continue
            self.busy, self.arrived_while_busy = True, 0
            started = self.clock()
            try:
                results = await self.run([w.item for w in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as exc:  # the batch's callers get its error; the consumer lives on
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            except BaseException:  # cancelled (the replica is shutting down)
                for waiting in batch:
                    waiting.future.cancel()
                raise
            finally:
                self.busy, self.company = False, self.arrived_while_busy > 0
            self.batch_time.observe(len(batch), self.clock() - started)
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)
