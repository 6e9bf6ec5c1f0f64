"""The node's core tokens (serve/cores.py), across real processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from serve.cores import CoreTokens


def hold_one(directory: str, taken: multiprocessing.Queue, release: multiprocessing.Event) -> None:
    with CoreTokens(2, Path(directory)).take(1) as count:
        taken.put(count)
        release.wait(30)


def test_a_lone_request_gets_only_the_cores_no_other_replica_holds(tmp_path: Path) -> None:
    tokens = CoreTokens(2, tmp_path)
    with tokens.take(2) as count:
        assert count == 2
    context = multiprocessing.get_context("spawn")
    taken, release = context.Queue(), context.Event()
    other = context.Process(target=hold_one, args=(str(tmp_path), taken, release))
    other.start()
    try:
        assert taken.get(timeout=30) == 1  # another replica runs a batch on one core
        with tokens.take(2) as count:
            assert count == 1
        with tokens.take(1) as count, CoreTokens(2, tmp_path).take(2) as second:
            assert (count, second) == (1, 0)  # every core is busy: run on your own share
    finally:
        release.set()
        other.join(30)
    with tokens.take(2) as count:
        assert count == 2  # released when the other process let go


def test_a_dead_replicas_tokens_are_free_again(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    taken, release = context.Queue(), context.Event()
    other = context.Process(target=hold_one, args=(str(tmp_path), taken, release))
    other.start()
    assert taken.get(timeout=30) == 1
    other.kill()
    other.join(30)
    with CoreTokens(2, tmp_path).take(2) as count:
        assert count == 2
