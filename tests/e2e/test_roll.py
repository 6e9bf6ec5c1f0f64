"""A rolling image update under load: scripts/roll.sh replaces every Ray node of the running stack
with a new image, one node at a time, while Locust sends sentiment traffic through the load
balancer, and no request fails.

The new image is the nodes' own image with one label more (`docker build` of `FROM <tag>` and a
`LABEL`, tagged with the same tag): a new image id and nothing else, so the test measures the
roll itself. The script runs with --skip-build, since its build would tag the project's own build
again. The tag keeps the new image afterwards; the test runs last, before `down`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.e2e.conftest import Stack, sentiment_load, wait_until

# Last (before `down`): the roll replaces every node, and the next `up.sh` (a build that tags
# the project's own image again) would replace every node once more.
pytestmark = [pytest.mark.e2e, pytest.mark.last]

# sentiment_load runs Locust for 600 s; the roll must end within it to have run under load.
ROLL_LIMIT_S = 580


def image_id(ref: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def build_new_image(tag: str) -> str:
    """Give `tag` a new image id: the image it names, plus a label."""
    built = subprocess.run(
        ["docker", "build", "--quiet", "--tag", tag, "-"],
        input=f"FROM {tag}\nLABEL rolled={time.time_ns()}\n",
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return image_id(tag)


class ContainerEvents:
    """Docker's `start` and `die` events of the project's containers while the block runs, in
    order: (time, action, container id, compose service)."""

    def __init__(self, stack: Stack, log: Path) -> None:
        self.stack = stack
        self.events: list[tuple[float, str, str, str]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._log = log  # a file, not a pipe read only at the end (a full one blocks the writer)

    def __enter__(self) -> ContainerEvents:
        with self._log.open("w") as out:
            self._proc = subprocess.Popen(
                ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
                 "--filter", "event=start", "--filter", "event=die",
                 "--filter", f"label=com.docker.compose.project={self.stack.project}"],
                stdout=out, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        time.sleep(1)  # subscribed before anything happens
        return self

    def __exit__(self, *_: object) -> None:
        assert self._proc is not None
        time.sleep(2)  # the last events are out
        self._proc.terminate()
        self._proc.wait(timeout=30)
        for line in self._log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            actor = event.get("Actor") or {}
            service = (actor.get("Attributes") or {}).get("com.docker.compose.service", "")
            # Short ids, as `docker ps -q` (Stack.containers) gives them.
            container = (actor.get("ID") or event.get("id", ""))[:12]
            self.events.append((event["timeNano"] / 1e9, event["Action"], container, service))
        self.events.sort()

    def workers_running(self, before: set[str]) -> list[int]:
        """How many ray-worker containers ran after each of their events, from `before`."""
        running = set(before)
        counts = []
        for _, action, container, service in self.events:
            if service != "ray-worker":
                continue
            if action == "start":
                running.add(container)
            else:
                running.discard(container)
            counts.append(len(running))
        return counts

    def died(self, containers: set[str]) -> list[float]:
        return [t for t, action, c, _ in self.events if action == "die" and c in containers]


class AliveWorkers:
    """The ALIVE worker nodes, counted every second in a thread while the block runs. A sample is
    skipped when the dashboard does not answer (the head restarts) or answers without an ALIVE
    head node (the new head is still coming up)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[int] = []
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                nodes = self.stack.nodes()
                if any(n["is_head_node"] for n in nodes):
                    self.samples.append(sum(not n["is_head_node"] for n in nodes))
                else:
                    self.skipped += 1
            except (requests.RequestException, ValueError, KeyError, TypeError):
                self.skipped += 1
            self._stop.wait(1)

    def __enter__(self) -> AliveWorkers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_roll_replaces_every_node_one_at_a_time_under_load(stack: Stack, tmp_path: Path) -> None:
    """Every ray-worker and the ray-head end up as new containers on the new image; the workers
    were replaced one at a time (a replacement ran before each old worker stopped, and never
    fewer than the configured workers were ALIVE), the head last; Locust saw no failed request."""
    # The stack as configured (earlier modules scale and crash workers), and ready.
    subprocess.run([str(ROOT / "scripts" / "up.sh")], cwd=ROOT, check=True, timeout=1200)
    workers = stack.workers
    old_workers = set(stack.containers("ray-worker"))
    (old_head,) = stack.containers("ray-head")
    assert len(old_workers) == workers, old_workers
    tag = stack.inspect(old_head)["Config"]["Image"]  # the nodes' image, as compose names it
    old_image = image_id(tag)
    new_image = build_new_image(tag)
    assert new_image != old_image, "docker build gave the same image id"

    roll: subprocess.CompletedProcess[str] | None = None
    try:
        with (
            ContainerEvents(stack, tmp_path / "events.jsonl") as events,
            AliveWorkers(stack) as alive,
            # 3 users: sentiment's autoscaler asks for ceil(3 / 3) = 1 replica, so every node's
            # replicas find room on the surge node at once. With 6 it asks for 2, what the default
            # cluster holds, and each drain waits for the replicas at capacity to settle (307 s
            # against 171 s); with 8 a third replica waits for room, takes the replacement node's
            # the moment it joins, and the drained node's replicas wait for Serve to find room
            # elsewhere (577 s).
            sentiment_load(stack, tmp_path / "roll", users=3) as load,
        ):
            started = time.monotonic()
            roll = subprocess.run(
                [str(ROOT / "scripts" / "roll.sh"), "--skip-build"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=(workers + 1) * 600 + 900,
            )
            roll_s = time.monotonic() - started
            time.sleep(10)  # load on the new nodes only
    finally:
        if roll is None or roll.returncode != 0:  # back to the configured shape for later modules
            subprocess.run([str(ROOT / "scripts" / "up.sh")], cwd=ROOT, timeout=1200)

    assert roll is not None
    sent, failed, rows = load.totals()
    output = roll.stdout + roll.stderr
    figures = f"requests {sent}, failed {failed}, roll {roll_s:.0f} s"
    print(
        f"\nroll: {figures}; ALIVE workers at least {min(alive.samples, default=-1)} in "
        f"{len(alive.samples)} samples ({alive.skipped} skipped while the head restarted)\n"
        f"{output[-4000:]}"
    )
    assert roll.returncode == 0, f"roll.sh exited {roll.returncode} ({figures}):\n{output[-6000:]}"
    assert "docker compose up -d --build" in output, "no note of the fast path"

    new_workers = set(stack.containers("ray-worker"))
    (new_head,) = stack.containers("ray-head")
    assert len(new_workers) == workers, f"{len(new_workers)} workers after the roll ({figures})"
    assert not new_workers & old_workers, f"workers not replaced: {new_workers & old_workers}"
    assert new_head != old_head, "the head was not replaced"
    on_image = {c: stack.inspect(c)["Image"] for c in [*new_workers, new_head]}
    assert all(i == new_image for i in on_image.values()), f"{on_image} != {new_image}"
    leftovers = set(stack.containers("ray-worker", exited=True)) & old_workers
    assert not leftovers, f"old workers not removed: {leftovers}"
    for targets in stack.containers("ray-targets"):  # same image as the nodes: recreated too
        if stack.inspect(targets)["Config"]["Image"] == tag:
            assert stack.inspect(targets)["Image"] == new_image, "ray-targets not recreated"

    # One at a time: every old worker stopped after its replacement started, so the running
    # workers never dropped below the configured count nor rose above one more; the head last.
    counts = events.workers_running(old_workers)
    worker_stops = events.died(old_workers)
    head_stops = events.died({old_head})
    assert len(worker_stops) == workers, f"old workers' stops: {worker_stops}; {events.events}"
    assert counts and min(counts) >= workers and max(counts) <= workers + 1, (
        f"ray-worker containers running along the roll: {counts}; {events.events}"
    )
    assert head_stops and head_stops[0] > max(worker_stops), f"head not last: {events.events}"
    assert len(alive.samples) >= 30, f"only {len(alive.samples)} node counts sampled"
    assert min(alive.samples) >= workers, (
        f"ALIVE workers fell to {min(alive.samples)} of {workers} ({figures}): {alive.samples}"
    )

    assert sent > 0 and failed == 0, f"{figures}\n" + "\n".join(rows) + load.output[-3000:]
    assert roll_s <= ROLL_LIMIT_S, f"the roll outlasted the load ({figures})"
    settled = wait_until(
        lambda: (
            stack.serve_status() == "RUNNING"
            and sum(not n["is_head_node"] for n in stack.nodes()) == workers
        ),
        120,
    )
    assert settled is not None, f"not RUNNING with {workers} workers after the roll: {figures}"
    # Every model serves from the new nodes, each on its own route too.
    for model in ("sentiment", "summarization", "embedding"):
        resp = requests.post(
            f"{stack.api}/models/{model}/predict", json={"text": "after the roll"}, timeout=120
        )
        assert resp.status_code == 200, f"{model} after the roll: {resp.status_code} {resp.text}"
