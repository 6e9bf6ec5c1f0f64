"""A Ray job that causes, on purpose and bounded, the failures Ray's default dashboard watches.

Submitted to the stack by tests/e2e/test_monitoring.py so that the panels for worker crashes,
retried tasks, OOM kills and placement groups are proved to show them. Prints one JSON line with
what happened.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

CHUNK_BYTES = 32 * 2**20
CHUNK_EVERY_S = 0.1  # ~320 MB/s: Ray's memory monitor (every 250 ms) acts before the kernel does


@ray.remote(num_cpus=0)
class Attempts:
    """Counts attempts per name, so a retried task knows it is the retry."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def next(self, name: str) -> int:
        self.seen[name] = self.seen.get(name, 0) + 1
        return self.seen[name]


def container_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw != "max" and int(raw) < 2**50:
            return int(raw)
    return None


@ray.remote(num_cpus=0, max_retries=1)
def crash_once(attempts: ray.actor.ActorHandle) -> str:
    if ray.get(attempts.next.remote("crash")) == 1:
        os._exit(1)  # the raylet counts an unexpected worker failure; Ray retries the task
    return "retried"


@ray.remote(num_cpus=0, max_retries=1)
def exhaust_memory_once(attempts: ray.actor.ActorHandle) -> str:
    if ray.get(attempts.next.remote("oom")) > 1:
        return "retried"
    limit = container_memory_limit()
    if limit is None:  # never fill a host's whole memory
        return "refused: no container memory limit on this node"
    hoard = []
    while len(hoard) * CHUNK_BYTES < limit:
        hoard.append(bytearray(os.urandom(1)) * CHUNK_BYTES)
        time.sleep(CHUNK_EVERY_S)
    return "not killed"


def main() -> None:
    ray.init()
    attempts = Attempts.remote()
    pg = placement_group([{"memory": 2**20}])
    ray.get(pg.ready(), timeout=60)
    remove_placement_group(pg)
    results = {"placement_group": "created and removed"}
    results["crash"] = ray.get(crash_once.remote(attempts), timeout=120)
    worker = next(
        n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]
    )
    on_worker = NodeAffinitySchedulingStrategy(worker["NodeID"], soft=False)
    oom = exhaust_memory_once.options(scheduling_strategy=on_worker).remote(attempts)
    results["oom"] = ray.get(oom, timeout=180)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
