"""images/advertise.py refuses, before touching anything, an address other hosts cannot reach."""

from __future__ import annotations

import pytest

from images import advertise


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "127.1.2.3", "ray-head", "10.0.0.300"])
def test_an_address_other_hosts_cannot_reach_is_refused(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert advertise.main([address, "true"]) == 2
    assert "RAY_NODE_ADDRESS" in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert advertise.main(["10.0.0.7"]) == 2
    assert "advertise.py" in capsys.readouterr().err


def test_an_address_already_here_is_found_local() -> None:
    assert advertise.is_local("127.0.0.1")
    assert not advertise.is_local("198.51.100.123")  # TEST-NET-2: documentation only
