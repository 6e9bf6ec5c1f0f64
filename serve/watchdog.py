"""How long the batch in hand should take, so a replica's health check can tell a long batch from
a hung one.

A fixed limit cannot do both: one short enough to catch a hang within seconds condemns a full
batch of the longest texts, and one long enough for that batch leaves a hung replica in rotation
for minutes. The cost of a batch grows with its size times its longest input (the batch is padded
to it, and inputs are cut at `max_input_tokens`); the replica learns seconds per unit of cost from
the batches it ran, and calls the running batch hung once it has run `margin` times what its cost
predicts, and past the model's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

# Characters per token, roughly, for English under WordPiece/BPE: what turns the token limit into
# a cap on the characters that count.
CHARS_PER_TOKEN = 4


@dataclass
class BatchWatch:
    max_input_tokens: int
    margin: float = 4.0  # a healthy batch stays well within this many times its prediction
    floor_s: float = 1.0  # never hung sooner: keeps a test's sub-second timeout from condemning
    smoothing: float = 0.2  # weight of the newest batch in seconds per unit
    seconds_per_unit: float | None = None
    started: float | None = None  # when the running batch started; None while idle
    units: int = 0  # the running batch's cost

    def cost(self, texts: list[str]) -> int:
        longest = max((len(t) for t in texts), default=1)
        return len(texts) * max(1, min(longest, self.max_input_tokens * CHARS_PER_TOKEN))

    def start(self, texts: list[str], now: float) -> None:
        self.started, self.units = now, self.cost(texts)

    def finish(self, now: float, learn: bool = True) -> float:
        """The batch is done; learn its seconds per unit (not from a failed one). Its duration."""
        elapsed = 0.0 if self.started is None else now - self.started
        if learn and self.units:
            rate = elapsed / self.units
            old = self.seconds_per_unit
            self.seconds_per_unit = rate if old is None else old + self.smoothing * (rate - old)
        self.started, self.units = None, 0
        return elapsed

    def expected_s(self) -> float:
        """What the running batch should take, from the batches before it (0 before any)."""
        return (self.seconds_per_unit or 0.0) * self.units

    def limit_s(self, timeout_s: float) -> float:
        return max(timeout_s, self.floor_s, self.margin * self.expected_s())

    def hung(self, now: float, timeout_s: float) -> str | None:
        """Why the running batch counts as hung, or None."""
        if self.started is None:
            return None
        running_s = now - self.started
        limit_s = self.limit_s(timeout_s)
        if running_s <= limit_s:
            return None
        return (
            f"a batch of cost {self.units} has run for {running_s:.0f}s, past {limit_s:.0f}s "
            f"({self.margin:g}x the {self.expected_s():.1f}s its cost predicts, and the model's "
            f"timeout of {timeout_s:g}s): the model is hung"
        )
