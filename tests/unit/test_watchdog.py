"""serve/watchdog.py: a long batch of long inputs is not called hung; a hung one is, in time."""

from __future__ import annotations

from serve.watchdog import CHARS_PER_TOKEN, BatchWatch


def learned(watch: BatchWatch, seconds: float, texts: list[str]) -> BatchWatch:
    watch.start(texts, 0.0)
    watch.finish(seconds)
    return watch


def test_cost_grows_with_batch_size_and_longest_input_up_to_the_token_limit() -> None:
    watch = BatchWatch(max_input_tokens=512)
    assert watch.cost(["ab", "abcd"]) == 2 * 4
    cap = 512 * CHARS_PER_TOKEN
    assert watch.cost(["x" * 10_000] * 32) == 32 * cap  # cut at max_input_tokens


def test_a_full_batch_of_the_longest_inputs_may_outlast_the_timeout() -> None:
    """Learned on short batches (50 ms for 8 short texts): a batch of 32 texts at the token limit
    predicts far more, and runs past the 10 s timeout without being called hung."""
    watch = learned(BatchWatch(max_input_tokens=512), 0.05, ["a short text"] * 8)
    watch.start(["x" * 10_000] * 32, 100.0)
    assert watch.expected_s() > 10
    assert watch.hung(100.0 + 15, timeout_s=10) is None
    assert watch.hung(100.0 + watch.limit_s(10) + 1, timeout_s=10) is not None


def test_a_small_batch_that_hangs_is_called_hung_just_past_the_timeout() -> None:
    watch = learned(BatchWatch(max_input_tokens=512), 0.05, ["a short text"] * 8)
    watch.start(["a short text"] * 4, 0.0)
    assert watch.hung(9.0, timeout_s=10) is None
    reason = watch.hung(10.5, timeout_s=10)
    assert reason and "hung" in reason and "timeout of 10s" in reason


def test_before_any_batch_the_timeout_and_floor_decide() -> None:
    watch = BatchWatch(max_input_tokens=512)
    watch.start(["x" * 2000] * 32, 0.0)
    assert watch.limit_s(timeout_s=0.001) == watch.floor_s
    assert watch.hung(0.5, timeout_s=0.001) is None and watch.hung(1.5, timeout_s=0.001)


def test_a_failed_batch_teaches_nothing_and_idle_is_never_hung() -> None:
    watch = learned(BatchWatch(max_input_tokens=512), 0.1, ["abcd"])
    rate = watch.seconds_per_unit
    watch.start(["abcd"], 0.0)
    watch.finish(50.0, learn=False)
    assert watch.seconds_per_unit == rate
    assert watch.hung(1e9, timeout_s=1) is None
