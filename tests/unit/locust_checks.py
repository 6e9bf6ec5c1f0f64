"""Load shapes and the Locust exporter, with real Locust objects and no traffic.

Run by test_loadtest.py in a process of its own: importing Locust monkey-patches sockets and
threads (gevent) for the whole process, which the Ray tests must not inherit.
"""

from __future__ import annotations

import itertools
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from locust.argument_parser import get_parser
from locust.env import Environment

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "loadtest"))  # as `locust -f loadtest/` does

import exporter
from api_target import api_port, default_host, dotenv_value
from exporter import LocustCollector
from ramp_shape import RampShape
from shape_picker import ShapePicker
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


def test_ramp_shape_rises_a_little_at_a_time() -> None:
    users = [t[0] if t else None for t in ticks(RampShape, 500)]
    rising = users[: RampShape.ramp_s]
    assert rising[0] == RampShape.base_users and rising == sorted(rising)
    assert max(b - a for a, b in itertools.pairwise(rising)) <= 1
    assert users[RampShape.ramp_s] == RampShape.peak_users
    end = RampShape.ramp_s + RampShape.hold_s + RampShape.cooldown_s
    assert users[end - 1] == RampShape.base_users and users[end] is None


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


def test_dotenv_value_reads_compose_style_lines(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# API_PORT=1\nAPI_PORTS=2\nAPI_PORT=8001\nAPI_PORT=8002 # later wins\nQUOTED='9'\n"
    )
    assert dotenv_value(env_file, "API_PORT") == "8002"
    assert dotenv_value(env_file, "QUOTED") == "9"
    assert dotenv_value(env_file, "MISSING") is None
    assert dotenv_value(tmp_path / "absent.env", "API_PORT") is None


def test_api_port_is_read_as_compose_reads_it(tmp_path: Path) -> None:
    """Environment over .env, and empty or missing as 8000 (`${API_PORT:-8000}`)."""
    env_file = tmp_path / ".env"
    env_file.write_text('API_PORT="18000"\n')
    assert api_port({}, env_file) == "18000"
    assert api_port({"API_PORT": "19000"}, env_file) == "19000"
    assert api_port({"API_PORT": ""}, env_file) == "8000"
    assert api_port({}, tmp_path / "absent.env") == "8000"
    assert default_host({}, env_file) == "http://127.0.0.1:18000"


def test_users_default_to_the_local_api() -> None:
    assert SentimentUser.host == EmbeddingUser.host == SummarizationUser.host == default_host()
    assert default_host().startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("value", "addr"), [(None, "127.0.0.1"), ("", "127.0.0.1"), ("0.0.0.0", "0.0.0.0")]
)
def test_exporter_binds_locally_unless_told(
    monkeypatch: pytest.MonkeyPatch, value: str | None, addr: str
) -> None:
    """An empty LOCUST_EXPORTER_HOST (compose's `${VAR:-}`) must not mean all interfaces."""
    started: list[tuple[str, int]] = []

    class Server:
        def __init__(self, listener: tuple[str, int], *_: object, **__: object) -> None:
            started.append(listener)

        def start(self) -> None:
            pass

    monkeypatch.setattr(exporter, "WSGIServer", Server)
    monkeypatch.setattr(exporter.REGISTRY, "register", lambda collector: None)
    args = [] if value is None else ["--exporter-host", value]
    env = Environment(user_classes=[SentimentUser])
    env.parsed_options = get_parser(default_config_files=[]).parse_args(
        ["--exporter-port", "19646", *args], env_vars={}
    )
    env.create_local_runner()
    exporter.start_exporter(env)
    assert started == [(addr, 19646)]
    env.runner.quit()


# What the compose `locust` service can pass for "not set": Locust rejects an empty string
# (`${VAR:-}`) for its flags, numbers and choices, so each needs a value that parses.
COMPOSE_DEFAULTS = {
    "LOCUST_HEADLESS": "false",
    "LOCUST_RUN_TIME": "0",
    "LOCUST_USERS": "1",
    "LOCUST_SPAWN_RATE": "1",
    "LOCUST_SHAPE": "none",
    "LOCUST_EXPORTER_HOST": "0.0.0.0",
    "LOCUST_EXPORTER_PORT": "9646",
}
COMPOSE_COMMAND = [
    "-f",
    "/app/loadtest/",
    "--host",
    "http://lb:8000",
    "--web-host",
    "0.0.0.0",
]


def test_compose_defaults_mean_a_web_ui_run_without_limits() -> None:
    options = get_parser(default_config_files=[]).parse_args(
        COMPOSE_COMMAND, env_vars=COMPOSE_DEFAULTS
    )
    assert not options.headless
    assert not options.run_time  # 0: no limit, as when unset
    assert (options.num_users, options.spawn_rate) == (1, 1.0)  # Locust's own fallbacks
    assert options.shape == "none"
    assert options.exporter_host == options.web_host == "0.0.0.0"
    env = Environment(user_classes=[SentimentUser], parsed_options=options)
    runner = env.create_local_runner()
    picker = ShapePicker()
    picker.runner = runner
    picker.get_run_time = lambda: 86400.0
    assert picker.tick() == (1, 1.0)
    runner.quit()


@pytest.mark.parametrize("var", sorted(set(COMPOSE_DEFAULTS) - {"LOCUST_EXPORTER_HOST"}))
def test_an_empty_locust_variable_is_an_error(var: str) -> None:
    """Why the compose service needs the defaults above rather than `${VAR:-}`."""
    with pytest.raises(SystemExit):
        get_parser(default_config_files=[]).parse_args(COMPOSE_COMMAND, env_vars={var: ""})
