"""serve/watchdog.py: a long batch of long inputs is not called hung; a hung one is, in time."""

from __future__ import annotations

import pytest

from serve.watchdog import BYTES_PER_TOKEN, BatchWatch

TIMEOUT_S = 10.0


def learned(seconds: float, texts: list[str], watch: BatchWatch | None = None) -> BatchWatch:
    watch = watch or BatchWatch(max_input_tokens=512)
    watch.start(texts, 0.0)
    watch.finish(seconds, TIMEOUT_S)
    return watch


def test_cost_grows_with_batch_size_and_longest_input_up_to_the_token_limit() -> None:
    watch = BatchWatch(max_input_tokens=512)
    assert watch.cost(["ab", "abcd"]) == 2 * 4
    assert watch.cost(["x" * 10_000] * 32) == 32 * 512 * BYTES_PER_TOKEN  # cut at the limit


def test_text_in_any_script_counts_by_its_bytes() -> None:
    """A CJK character is often a token of its own, and 3 bytes: 512 of them cost three times
    what 512 English characters (about 128 tokens) do, not the same."""
    watch = BatchWatch(max_input_tokens=512)
    assert watch.cost(["汉" * 512]) == 3 * watch.cost(["x" * 512]) == 1536


def test_a_full_batch_of_the_longest_inputs_may_outlast_the_timeout() -> None:
    """Learned on short batches (50 ms for 8 short texts): a batch of 32 texts at the token limit
    predicts far more, and runs past the 10 s timeout without being called hung."""
    watch = learned(0.05, ["a short text"] * 8)
    watch.start(["x" * 10_000] * 32, 100.0)
    assert watch.expected_s() > TIMEOUT_S
    assert watch.hung(100.0 + 15, TIMEOUT_S) is None
    assert watch.hung(100.0 + watch.limit_s(TIMEOUT_S) + 1, TIMEOUT_S) is not None


def test_no_prediction_keeps_a_hung_batch_past_the_ceiling() -> None:
    watch = learned(1.5, ["a short text"])  # a slow warm-up: a very high rate per unit
    watch.start(["x" * 10_000] * 32, 0.0)
    assert watch.limit_s(TIMEOUT_S) == watch.ceiling * TIMEOUT_S
    reason = watch.hung(watch.ceiling * TIMEOUT_S + 1, TIMEOUT_S)
    assert reason and "hung" in reason


def test_a_small_batch_that_hangs_is_called_hung_just_past_the_timeout() -> None:
    watch = learned(0.05, ["a short text"] * 8)
    watch.start(["a short text"] * 4, 0.0)
    assert watch.hung(9.0, TIMEOUT_S) is None
    reason = watch.hung(10.5, TIMEOUT_S)
    assert reason and "timeout of 10s" in reason


def test_before_any_batch_the_timeout_and_floor_decide() -> None:
    watch = BatchWatch(max_input_tokens=512)
    watch.start(["x" * 2000] * 32, 0.0)
    assert watch.limit_s(timeout_s=0.001) == watch.floor_s
    assert watch.hung(0.5, timeout_s=0.001) is None and watch.hung(1.5, timeout_s=0.001)


def test_a_failed_or_overlong_batch_teaches_nothing_and_idle_is_never_hung() -> None:
    watch = learned(0.1, ["abcd"])
    rate = watch.seconds_per_unit
    watch.start(["abcd"], 0.0)
    watch.finish(5.0, TIMEOUT_S, learn=False)  # failed
    watch.start(["abcd"], 0.0)
    watch.finish(3600.0, TIMEOUT_S)  # a hang that ended: past its limit
    assert watch.seconds_per_unit == rate
    assert watch.hung(1e9, TIMEOUT_S) is None


@pytest.mark.parametrize("seconds", [0.0001, 9.0])
def test_one_batch_moves_the_rate_by_a_bounded_step(seconds: float) -> None:
    watch = learned(0.1, ["abcd"])
    rate = watch.seconds_per_unit
    learned(seconds, ["abcd"], watch)
    assert rate / watch.max_step <= watch.seconds_per_unit <= rate * watch.max_step
