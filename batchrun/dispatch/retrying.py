"""Retry policy as tenacity values: which errors retry, how long to wait, when to give up.

The values (``stop``, ``wait``, ``retry``) are tenacity's; the loop that applies them is ours.
tenacity's ``AsyncRetrying`` builds its call state, statistics and action chain for every
row, which cost as much CPU as the rest of the per-row bookkeeping; nearly every row succeeds
at once, so ``RetryLoop`` creates tenacity's state only after a failure.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
from tenacity import Future as AttemptOutcome
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from batchrun.core.errors import BatchrunError, RetryableError

Sleep = Callable[[float], Awaitable[None]]


class wait_server_hint(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait what the server asked for (Retry-After), never less, plus a little jitter so the
    rows refused together do not all come back together; else fall back to ``fallback``.

    This is the refused row's own wait. Whether everybody else waits too is the shared
    limiter's decision: only refusals that show overload pause all dispatch.
    """

    def __init__(self, fallback: wait_base, cap_s: float, jitter: float = 0.2,
                 draw: Callable[[], float] = random.random) -> None:
        self.fallback = fallback
        self.cap_s = cap_s
        self.jitter = jitter  # up to this share of the asked wait (at least 50 ms) on top
        self.draw = draw

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, BatchrunError) and error.retry_after is not None:
            asked = min(self.cap_s, max(0.0, error.retry_after))
            return asked + self.draw() * max(0.05, self.jitter * asked)
        return float(self.fallback(retry_state))


class Attempt:
    """One try: ``with attempt:`` keeps the exception of a failed try for the loop to judge."""

    __slots__ = ("number", "error")

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: Exception | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            self.error = exc
            return True
        return False  # success, or cancellation and friends: nothing to judge


class RetryLoop:
    """``async for attempt in loop: with attempt: ...`` as with tenacity's ``AsyncRetrying``
    (``reraise=True``): the loop ends after a try that raised nothing, and re-raises the last
    error once ``retry`` refuses it or ``stop`` says so."""

    __slots__ = ("stop", "wait", "retry", "sleep", "_attempt", "_state", "_started")

    def __init__(self, *, stop: stop_base, wait: wait_base, retry: retry_base,
                 sleep: Sleep = anyio.sleep) -> None:
        self.stop = stop
        self.wait = wait
        self.retry = retry
        self.sleep = sleep
        self._attempt: Attempt | None = None
        self._state: RetryCallState | None = None
        self._started = time.monotonic()

    def __aiter__(self) -> RetryLoop:
        return self

    async def __anext__(self) -> Attempt:
        previous = self._attempt
        if previous is None:
            self._attempt = Attempt(1)
            return self._attempt
        error = previous.error
        if error is None:
            raise StopAsyncIteration
        state = self._judge(previous.number, error)
        if not self.retry(state) or self.stop(state):
            raise error
        delay = float(self.wait(state))
        state.idle_for += delay
        state.upcoming_sleep = delay
        await self.sleep(delay)
        self._attempt = Attempt(previous.number + 1)
        return self._attempt

    def _judge(self, number: int, error: Exception) -> RetryCallState:
        """tenacity's view of the failed try, for its stop, wait and retry values."""
        state = self._state
        if state is None:
            state = self._state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.start_time = self._started
        state.attempt_number = number
        state.outcome = AttemptOutcome.construct(number, error, True)
        state.outcome_timestamp = time.monotonic()
        return state


def retry_policy(
    *,
    max_attempts: int,
    max_wait_s: float,
    initial_wait_s: float = 0.5,
    sleep: Sleep | None = None,
) -> RetryLoop:
    """Retry ``RetryableError`` up to ``max_attempts`` times with jittered exponential backoff,
    honouring Retry-After; anything else (row errors, fatal errors) goes straight out."""
    return retry_loops(max_attempts=max_attempts, max_wait_s=max_wait_s,
                       initial_wait_s=initial_wait_s, sleep=sleep)()


def retry_loops(
    *,
    max_attempts: int,
    max_wait_s: float,
    initial_wait_s: float = 0.5,
    sleep: Sleep | None = None,
) -> Callable[[], RetryLoop]:
    """``retry_policy``'s loops made by one call each (a run makes one loop a row: the policy
    is looked up once, not per row)."""
    stop, wait, retry = _policy_values(max_attempts, max_wait_s, initial_wait_s)
    return functools.partial(RetryLoop, stop=stop, wait=wait, retry=retry,
                             sleep=sleep if sleep is not None else anyio.sleep)


@functools.lru_cache(maxsize=32)
def _policy_values(max_attempts: int, max_wait_s: float,
                   initial_wait_s: float) -> tuple[stop_base, wait_base, retry_base]:
    """The policy's values, built once: they hold no state, every row's loop can share them."""
    return (
        stop_after_attempt(max_attempts),
        wait_server_hint(
            wait_exponential(multiplier=initial_wait_s, max=max_wait_s)
            + wait_random(0, initial_wait_s),
            cap_s=max_wait_s,
        ),
        retry_if_exception_type(RetryableError),
    )
