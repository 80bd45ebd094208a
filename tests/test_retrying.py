"""The retry loop: tenacity's policy values applied by batchrun's lean loop."""

from __future__ import annotations

import anyio
import pytest

from batchrun.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    TransportError,
    UpstreamError,
)
from batchrun.dispatch.retrying import retry_policy


def run_loop(outcomes: list[Exception | None], **policy: float) -> tuple[list[int], list[float],
                                                                          BaseException | None]:
    """Feed ``outcomes`` (None = success) to the loop; return attempt numbers, sleeps, error."""
    numbers: list[int] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def main() -> BaseException | None:
        script = iter(outcomes)
        try:
            async for attempt in retry_policy(max_attempts=int(policy.get("max_attempts", 5)),
                                              max_wait_s=policy.get("max_wait_s", 60.0),
                                              initial_wait_s=0.5, sleep=sleep):
                with attempt:
                    numbers.append(attempt.number)
                    outcome = next(script)
                    if outcome is not None:
                        raise outcome
        except Exception as error:
            return error
        return None

    return numbers, sleeps, anyio.run(main)


def test_success_at_once_never_sleeps() -> None:
    assert run_loop([None]) == ([1], [], None)


def test_retryable_errors_are_retried_with_growing_jittered_backoff() -> None:
    numbers, sleeps, error = run_loop([ServerError("a"), TransportError("b"), None])
    assert numbers == [1, 2, 3] and error is None
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 1.5


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors = [UpstreamError(f"try {n}") for n in range(1, 4)]
    numbers, sleeps, error = run_loop([*errors], max_attempts=3)
    assert numbers == [1, 2, 3] and len(sleeps) == 2
    assert error is errors[-1]


@pytest.mark.parametrize("failure", [InvalidRequestError("bad"), AuthenticationError("key"),
                                     KeyError("a bug")])
def test_other_errors_go_straight_out(failure: Exception) -> None:
    numbers, sleeps, error = run_loop([failure, None])
    assert numbers == [1] and sleeps == [] and error is failure


def test_retry_after_is_honoured_and_capped() -> None:
    outcomes: list[Exception | None] = [UpstreamError("x", retry_after=7.0),
                                        UpstreamError("y", retry_after=90), None]
    _, sleeps, _ = run_loop(outcomes, max_wait_s=20)
    # Never sooner than asked (or than the cap), with at most a fifth more as jitter.
    assert 7.0 <= sleeps[0] <= 7.0 * 1.2 and 20 <= sleeps[1] <= 20 * 1.2


def test_a_429_delays_its_own_retry_by_its_retry_after_with_jitter() -> None:
    waits = set()
    for _ in range(20):
        numbers, sleeps, error = run_loop([RateLimitedError("slow", retry_after=5.0), None])
        assert numbers == [1, 2] and error is None and 5.0 <= sleeps[0] <= 6.0
        waits.add(sleeps[0])
    assert len(waits) > 1  # jittered: rows refused together do not return together
    _, sleeps, _ = run_loop([RateLimitedError("slow", retry_after=None), None])
    assert 0 < sleeps[0] <= 1.0  # no Retry-After: our own backoff


def test_cancellation_is_not_swallowed() -> None:
    async def main() -> list[int]:
        numbers: list[int] = []
        with anyio.move_on_after(0.05):
            async for attempt in retry_policy(max_attempts=5, max_wait_s=1):
                with attempt:
                    numbers.append(attempt.number)
                    await anyio.sleep(10)
        return numbers

    assert anyio.run(main) == [1]
