"""How long the batch in hand should take, so a replica's health check can tell a long batch from
a hung one.

A fixed limit cannot do both: one short enough to catch a hang within seconds condemns a full
batch of the longest texts, and one long enough for that batch leaves a hung replica in rotation
for minutes. The cost of a batch grows with its size times its longest input (the batch is padded
to it, and inputs are cut at `max_input_tokens`); the replica learns seconds per unit of cost from
the batches it ran, and calls the running batch hung once it has run past the model's timeout and
`margin` times what its cost predicts, and in any case past `ceiling` times the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

# UTF-8 bytes per token, roughly: about 4 for English under WordPiece/BPE, fewer characters but
# as many bytes for CJK text or emoji. What turns the token limit into a cap on the bytes that
# count.
BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class Running:
    started: float
    units: int


@dataclass
class BatchWatch:
    max_input_tokens: int
    margin: float = 4.0  # a healthy batch stays well within this many times its prediction
    ceiling: float = 5.0  # hung past this many times the timeout, whatever the prediction
    floor_s: float = 1.0  # never hung sooner: keeps a test's sub-second timeout from condemning
    smoothing: float = 0.2  # weight of the newest batch in seconds per unit
    max_step: float = 2.0  # one batch moves the rate by at most this factor either way
    seconds_per_unit: float | None = None
    # The running batch, None while idle. One attribute, replaced whole: Serve runs a sync
    # check_health in a thread while the event loop starts and finishes batches.
    running: Running | None = None

    def cost(self, texts: list[str]) -> int:
        longest = max((len(t.encode()) for t in texts), default=1)
        return len(texts) * max(1, min(longest, self.max_input_tokens * BYTES_PER_TOKEN))

    def start(self, texts: list[str], now: float) -> None:
        self.running = Running(now, self.cost(texts))

    def finish(self, now: float, timeout_s: float, learn: bool = True) -> float:
        """The batch is done; learn its seconds per unit, unless it failed or ran past its limit
        (a hang that ended, or a stall, says nothing about the model's speed). Its duration."""
        batch, self.running = self.running, None
        if batch is None:
            return 0.0
        elapsed = now - batch.started
        if learn and elapsed <= self._limit_s(batch.units, timeout_s):
            rate = elapsed / batch.units
            old = self.seconds_per_unit
            if old is not None:
                rate = min(max(rate, old / self.max_step), old * self.max_step)
                rate = old + self.smoothing * (rate - old)
            self.seconds_per_unit = rate
        return elapsed

    def _expected_s(self, units: int) -> float:
        return (self.seconds_per_unit or 0.0) * units

    def _limit_s(self, units: int, timeout_s: float) -> float:
        predicted = min(self.margin * self._expected_s(units), self.ceiling * timeout_s)
        return max(timeout_s, self.floor_s, predicted)

    def expected_s(self) -> float:
        """What the running batch should take, from the batches before it (0 before any)."""
        batch = self.running
        return 0.0 if batch is None else self._expected_s(batch.units)

    def limit_s(self, timeout_s: float) -> float:
        batch = self.running
        return self._limit_s(0 if batch is None else batch.units, timeout_s)

    def hung(self, now: float, timeout_s: float) -> str | None:
        """Why the running batch counts as hung, or None."""
        batch = self.running
        if batch is None:
            return None
        running_s = now - batch.started
        limit_s = self._limit_s(batch.units, timeout_s)
        if running_s <= limit_s:
            return None
        return (
            f"a batch of cost {batch.units} has run for {running_s:.0f}s, past {limit_s:.0f}s "
            f"(the model's timeout of {timeout_s:g}s, {self.margin:g}x the "
            f"{self._expected_s(batch.units):.1f}s its cost predicts, at most "
            f"{self.ceiling:g}x the timeout): the model is hung"
        )
