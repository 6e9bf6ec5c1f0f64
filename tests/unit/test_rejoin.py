"""images/rejoin.py: which address a worker waits on, and the GCS it asks. The wait itself is
e2e-tested (tests/e2e/test_reliability.py: a SIGKILLed worker's container restarts with its
address, and no request meets a reused port)."""

from __future__ import annotations

import socket

import pytest

from images import rejoin


def test_the_advertised_address_is_the_one_waited_on() -> None:
    assert rejoin.own_address(["ray", "start", "--node-ip-address=10.0.0.7"]) == "10.0.0.7"
    assert rejoin.own_address(["ray", "start", "--node-ip-address", "10.0.0.8"]) == "10.0.0.8"


def test_without_one_the_containers_own_address() -> None:
    assert rejoin.own_address(["ray", "start"]) == socket.gethostbyname(socket.gethostname())


def test_the_gcs_is_the_one_ray_start_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rejoin.gcs_address(["ray", "start", "--address=head:6379"]) == "head:6379"
    monkeypatch.setenv("RAY_HEAD_ADDRESS", "ray-head:6379")
    assert rejoin.gcs_address(["ray", "start"]) == "ray-head:6379"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert rejoin.main([]) == 2
    assert "rejoin.py" in capsys.readouterr().err
