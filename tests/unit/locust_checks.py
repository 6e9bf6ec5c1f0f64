"""Load shapes and the Locust exporter, with real Locust objects and no traffic.

Run by test_loadtest.py in a process of its own: importing Locust monkey-patches sockets and
threads (gevent) for the whole process, which the Ray tests must not inherit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from locust.env import Environment

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "loadtest"))  # as `locust -f loadtest/` does

from exporter import LocustCollector
from spike_shape import SpikeShape
from step_shape import StepUpDownShape
from users import EmbeddingUser, SentimentUser, SummarizationUser


def ticks(shape_class: type, until_s: int) -> list[tuple[int, float] | None]:
    shape = shape_class()
    out = []
    for second in range(until_s):
        shape.get_run_time = lambda s=second: float(s)
        out.append(shape.tick())
    return out


def test_step_shape_goes_up_holds_and_comes_back_down() -> None:
    shape = StepUpDownShape
    users = [t[0] if t else None for t in ticks(shape, 600)]
    peak_at = users.index(shape.peak_users)
    assert users[0] == shape.base_users
    assert users[:peak_at] == sorted(users[:peak_at])  # monotonic ramp
    assert users.count(shape.peak_users) >= shape.hold_s
    after = users[users.index(shape.peak_users) + users.count(shape.peak_users)]
    assert after == shape.base_users
    assert users[-1] is None  # the run ends


def test_spike_shape_jumps_at_once() -> None:
    users = [t[0] if t else None for t in ticks(SpikeShape, 400)]
    first_spike = users.index(SpikeShape.spike_users)
    assert first_spike == SpikeShape.warmup_s
    assert users[first_spike - 1] == SpikeShape.base_users
    assert users.count(SpikeShape.spike_users) == SpikeShape.spike_s
    assert users[-1] is None


def test_users_target_every_model() -> None:
    assert {SentimentUser.model, EmbeddingUser.model, SummarizationUser.model} == {
        "sentiment",
        "embedding",
        "summarization",
    }
    assert all(u.weight > 0 for u in (SentimentUser, EmbeddingUser, SummarizationUser))


def test_exporter_reports_locust_stats() -> None:
    env = Environment(user_classes=[SentimentUser])
    env.create_local_runner()
    for ms in (10, 20, 30, 40):
        env.events.request.fire(
            request_type="POST",
            name="/predict [sentiment]",
            response_time=ms,
            response_length=10,
            exception=None,
            context={},
        )
    env.events.request.fire(
        request_type="POST",
        name="/predict [sentiment]",
        response_time=5,
        response_length=0,
        exception=RuntimeError("HTTP 503"),
        context={},
    )
    families = {f.name: f for f in LocustCollector(env).collect()}
    assert families["locust_users"].samples[0].value == 0
    requests = {s.name: s.value for s in families["locust_requests"].samples}
    assert requests["locust_requests_total"] == 5
    assert families["locust_failures"].samples[0].value == 1
    labels = families["locust_requests"].samples[0].labels
    assert labels == {"name": "/predict [sentiment]", "method": "POST"}
    env.runner.quit()


@pytest.mark.parametrize("path", sorted((ROOT / "loadtest").glob("*.py")), ids=lambda p: p.name)
def test_loadtest_modules_import(path: Path) -> None:
    __import__(path.stem)


def test_shape_picker_honours_users_and_run_time() -> None:
    from argparse import Namespace

    from shape_picker import ShapePicker

    env = Environment(user_classes=[SentimentUser], shape_class=None)
    env.parsed_options = Namespace(shape="none", num_users=7, spawn_rate=2.0, run_time=30)
    runner = env.create_local_runner()
    picker = ShapePicker()
    picker.runner = runner
    picker.get_run_time = lambda: 10.0
    assert picker.tick() == (7, 2.0)
    picker.get_run_time = lambda: 31.0
    assert picker.tick() is None
    env.parsed_options.shape, env.parsed_options.run_time = "spike", None
    picker.get_run_time = lambda: float(SpikeShape.warmup_s + 1)
    assert picker.tick() == (SpikeShape.spike_users, SpikeShape.spawn_rate)
    runner.quit()
