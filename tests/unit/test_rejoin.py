"""images/rejoin.py: which address a restarted worker waits on, the GCS it asks, and when it
starts. Its question to a real GCS is integration-tested (tests/integration/test_health.py), the
whole path end to end (tests/e2e/test_reliability.py: a SIGKILLed worker restarts at its address
and no request meets a reused port)."""

from __future__ import annotations

import pytest

from images import rejoin


def test_the_advertised_address_is_the_one_waited_on() -> None:
    assert rejoin.own_address(["ray", "start", "--node-ip-address=10.0.0.7"]) == "10.0.0.7"
    assert rejoin.own_address(["ray", "start", "--node-ip-address", "10.0.0.8"]) == "10.0.0.8"


def test_the_gcs_is_the_one_ray_start_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rejoin.gcs_address(["ray", "start", "--address=head:6379"]) == "head:6379"
    assert rejoin.gcs_address(["ray", "start", "--address", "head:6380"]) == "head:6380"
    monkeypatch.setenv("RAY_HEAD_ADDRESS", "elsewhere:7000")
    assert rejoin.gcs_address(["ray", "start"]) == "elsewhere:7000"


class Cluster:
    """What the GCS answers, one poll after another (None: it could not be asked)."""

    def __init__(self, answers: list[list[str] | None]) -> None:
        self.answers = answers
        self.asked = 0

    def alive_at(self, gcs: str, address: str) -> list[str] | None:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake clock that each sleep advances."""
    now = [0.0]
    monkeypatch.setattr(rejoin.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(rejoin.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    return now


@pytest.mark.parametrize(
    ("answers", "polls", "waited_s"),
    [
        ([[]], 1, 0.0),  # a first start: nothing at this address, start at once
        ([["old"], ["old"], ["old"], []], 4, 3.0),  # the dead node is declared dead
        ([None, None, ["old"], []], 4, 3.0),  # the head restarts too: no answer is no all-clear
    ],
)
def test_it_starts_once_no_live_node_holds_its_address(
    monkeypatch: pytest.MonkeyPatch,
    clock: list[float],
    answers: list[list[str] | None],
    polls: int,
    waited_s: float,
) -> None:
    cluster = Cluster(answers)
    monkeypatch.setattr(rejoin, "alive_at", cluster.alive_at)
    rejoin.wait("ray-head:6379", "10.0.0.7")
    assert (cluster.asked, clock[0]) == (polls, waited_s)


def test_it_starts_anyway_after_the_limit(
    monkeypatch: pytest.MonkeyPatch, clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(rejoin, "alive_at", Cluster([["old"]]).alive_at)
    rejoin.wait("ray-head:6379", "10.0.0.7", limit_s=5)
    assert clock[0] == 5.0
    assert "starting anyway" in capsys.readouterr().out


def test_then_it_runs_the_command(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> None:
    monkeypatch.setattr(rejoin, "alive_at", Cluster([[]]).alive_at)
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(rejoin.os, "execvp", lambda file, args: ran.append((file, args)))
    rejoin.main(["ray", "start", "--address=ray-head:6379"])
    assert ran == [("ray", ["ray", "start", "--address=ray-head:6379"])]


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert rejoin.main([]) == 2
    assert "rejoin.py" in capsys.readouterr().err
