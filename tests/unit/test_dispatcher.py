"""The replica's batch dispatcher (serve/dispatcher.py), driven by a scripted model in asyncio."""

from __future__ import annotations

import asyncio

import pytest

from serve.dispatcher import ArrivalRate, BatchTimeModel, Dispatcher


class Model:
    """Records each batch; every batch takes `seconds`, and `fail` batches raise."""

    def __init__(self, seconds: float = 0.05, fail: int = 0) -> None:
        self.seconds = seconds
        self.fail = fail
        self.batches: list[list[str]] = []

    async def run(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        await asyncio.sleep(self.seconds)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("broken batch")
        return [item.upper() for item in items]


def test_a_batch_takes_everything_that_queued_while_the_model_ran() -> None:
    async def scenario() -> list[list[str]]:
        model = Model(seconds=0.2)
        dispatcher = Dispatcher(model.run, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.create_task(dispatcher.submit("first"))
        await asyncio.sleep(0.02)  # its batch is running
        rest = []
        for i in range(7):
            rest.append(asyncio.create_task(dispatcher.submit(f"r{i}")))
            await asyncio.sleep(0.01)
        assert await first == "FIRST"
        assert await asyncio.gather(*rest) == [f"R{i}" for i in range(7)]
        return model.batches

    assert [len(b) for b in asyncio.run(scenario())] == [1, 7]


def test_batches_stop_at_the_batch_size_and_keep_arrival_order() -> None:
    async def scenario() -> list[list[str]]:
        model = Model(seconds=0.05)
        dispatcher = Dispatcher(model.run, max_batch_size=4, max_wait_s=0.0)
        results = await asyncio.gather(*(dispatcher.submit(str(i)) for i in range(10)))
        assert results == [str(i) for i in range(10)]
        return model.batches

    assert asyncio.run(scenario()) == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        model = Model(seconds=0.01, fail=1)
        dispatcher = Dispatcher(model.run, max_batch_size=4, max_wait_s=0.0)
        outcomes = await asyncio.gather(
            *(dispatcher.submit(str(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
        assert await dispatcher.submit("after") == "AFTER"

    asyncio.run(scenario())


def test_a_caller_that_gave_up_is_left_out_of_its_batch() -> None:
    async def scenario() -> list[list[str]]:
        model = Model(seconds=0.2)
        dispatcher = Dispatcher(model.run, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.create_task(dispatcher.submit("first"))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(dispatcher.submit("impatient"), 0.05)
        assert await dispatcher.submit("patient") == "PATIENT"
        await first
        return model.batches

    assert asyncio.run(scenario()) == [["first"], ["patient"]]


def test_a_lone_client_never_waits_for_company() -> None:
    """One request at a time: each runs at once, even where waiting is allowed and the fitted
    batch time says a batch has a fixed cost larger than the gaps between requests."""

    async def scenario() -> float:
        model = Model(seconds=0.02)
        dispatcher = Dispatcher(model.run, max_batch_size=8, max_wait_s=0.5)
        for size, seconds in ((1, 0.1), (8, 0.15)):
            dispatcher.batch_time.observe(size, seconds)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(5):
            await dispatcher.submit(str(i))
        return loop.time() - started

    assert asyncio.run(scenario()) < 5 * 0.02 + 0.04


def test_requests_that_arrive_while_a_batch_runs_make_the_next_one_wait_for_company() -> None:
    """Two clients whose requests overlap: after a batch that had company, the next batch
    waits a little for the other client's request instead of running alone."""

    async def scenario() -> list[int]:
        model = Model(seconds=0.03)
        dispatcher = Dispatcher(model.run, max_batch_size=8, max_wait_s=0.05)
        for size, seconds in ((1, 0.03), (8, 0.037)):
            dispatcher.batch_time.observe(size, seconds)

        async def client(offset: float) -> None:
            await asyncio.sleep(offset)
            for i in range(6):
                await dispatcher.submit(f"{offset}-{i}")
                await asyncio.sleep(0.002)

        await asyncio.gather(client(0.0), client(0.01))
        return [len(b) for b in model.batches]

    sizes = asyncio.run(scenario())
    assert sizes[0] == 1 and sizes.count(2) >= 5, sizes


def test_a_batch_waits_for_company_when_requests_arrive_faster_than_its_fixed_cost() -> None:
    async def scenario() -> list[list[str]]:
        model = Model(seconds=0.01)
        dispatcher = Dispatcher(model.run, max_batch_size=8, max_wait_s=0.2)
        for size, seconds in ((1, 0.101), (8, 0.108)):  # 100 ms per batch, 1 ms per request
            dispatcher.batch_time.observe(size, seconds)
        dispatcher.arrivals.gaps.extend([0.004] * 3)  # a burst: one request every 4 ms
        dispatcher.company = True  # the last batch had requests arrive while it ran
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(dispatcher.submit(str(i))))
            await asyncio.sleep(0.004)
        await asyncio.gather(*tasks)
        return model.batches

    assert asyncio.run(scenario()) == [["0", "1", "2"]]


def test_waiting_is_bounded_by_max_wait_s() -> None:
    """Requests keep streaming in every 5 ms: the first batch still starts within max_wait_s."""

    async def scenario() -> tuple[float, list[int]]:
        model = Model(seconds=0.0)
        dispatcher = Dispatcher(model.run, max_batch_size=64, max_wait_s=0.03)
        for size, seconds in ((1, 1.0), (8, 1.007)):
            dispatcher.batch_time.observe(size, seconds)
        dispatcher.company = True
        dispatcher.arrivals.gaps.extend([0.005] * 4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        done: list[float] = []
        first = asyncio.create_task(dispatcher.submit("first"))
        first.add_done_callback(lambda _: done.append(loop.time()))
        rest = []
        for i in range(20):
            await asyncio.sleep(0.005)
            rest.append(asyncio.create_task(dispatcher.submit(str(i))))
        await asyncio.gather(first, *rest)
        return done[0] - started, [len(b) for b in model.batches]

    waited, sizes = asyncio.run(scenario())
    assert 0.02 <= waited < 0.06, waited
    assert 3 <= sizes[0] <= 8, sizes


def test_a_batch_stops_waiting_when_arrivals_pause() -> None:
    """Ten requests queued and no more coming: the batch waits out a pause of max_wait_s / 10,
    not max_wait_s."""

    async def scenario() -> float:
        model = Model(seconds=0.0)
        dispatcher = Dispatcher(model.run, max_batch_size=64, max_wait_s=0.3)
        for size, seconds in ((1, 1.0), (8, 1.007)):
            dispatcher.batch_time.observe(size, seconds)
        dispatcher.company = True
        dispatcher.arrivals.gaps.extend([0.001] * 4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(dispatcher.submit(str(i)) for i in range(10)))
        return loop.time() - started

    assert asyncio.run(scenario()) < 0.1


def test_batch_time_model_recovers_a_linear_cost() -> None:
    fit = BatchTimeModel()
    assert fit.fit() is None
    for size in (1, 4, 16, 32, 8, 2):
        fit.observe(size, 0.02 + 0.005 * size)
    intercept, slope = fit.fit() or (0, 0)
    assert intercept == pytest.approx(0.02)
    assert slope == pytest.approx(0.005)


def test_the_usual_gap_ignores_the_pause_between_bursts() -> None:
    rate = ArrivalRate()
    assert rate.usual_gap_s() == float("inf")
    for t in (0.0, 0.8, 0.801, 0.802, 0.803):
        rate.arrive(t)
    assert rate.usual_gap_s() == pytest.approx(0.001)
    assert rate.silence_s(0.9) == pytest.approx(0.097)
