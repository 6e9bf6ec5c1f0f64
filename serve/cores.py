"""The node's cores as tokens that its replicas take for each forward pass.

A lone request runs faster on every core of the node, but only if no other replica is running a
batch there: two thread pools on one core wait for each other at every parallel region (measured
on a 2-core node with 16 clients: 45 requests/s with lone requests on 2 threads beside the other
replica's batch, 64-67 with 1 thread; docs/benchmark.md). Each forward pass holds one token per
thread it runs (an advisory `flock` on a file per core, shared by every replica on the node and
released by the kernel if the replica dies); a lone request takes more only where they are free.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def default_directory() -> Path:
    """Shared by the node's processes (a container's temp dir is its node's own)."""
    return Path(tempfile.gettempdir()) / "serve-core-tokens"


class CoreTokens:
    """`count` tokens; `take(n)` holds up to n of them, never waiting for one."""

    def __init__(self, count: int, directory: Path | None = None) -> None:
        self.directory = directory or default_directory()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count = count
        # Each process tries the tokens from its own starting point, so replicas that take one
        # token each do not reach for the same one first.
        start = os.getpid() % count
        self.order = [(start + i) % count for i in range(count)]
        self.files = [
            os.open(self.directory / f"core-{i}", os.O_RDWR | os.O_CREAT, 0o666)
            for i in range(count)
        ]

    @contextmanager
    def take(self, wanted: int) -> Iterator[int]:
        """Up to `wanted` free tokens while the block runs; yields how many it holds (0 when
        every core is busy: the caller runs anyway, on its own share)."""
        held: list[int] = []
        for index in self.order:
            if len(held) >= wanted:
                break
            try:
                fcntl.flock(self.files[index], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            held.append(index)
        try:
            yield len(held)
        finally:
            for index in held:
                fcntl.flock(self.files[index], fcntl.LOCK_UN)
