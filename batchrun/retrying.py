"""Retry policy as tenacity values: which errors retry, how long to wait, when to give up."""

from __future__ import annotations

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from batchrun.errors import BatchrunError, RetryableError


class wait_server_hint(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait what the server asked for (Retry-After), else fall back to ``fallback``."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, BatchrunError) and error.retry_after is not None:
            return min(self.cap_s, max(0.0, error.retry_after))
        return float(self.fallback(retry_state))


def retry_policy(
    *,
    max_attempts: int,
    max_wait_s: float,
    initial_wait_s: float = 0.5,
    sleep: object | None = None,
) -> AsyncRetrying:
    """Retry ``RetryableError`` up to ``max_attempts`` times with jittered exponential backoff,
    honouring Retry-After; anything else (row errors, fatal errors) goes straight out."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=wait_server_hint(
            wait_exponential(multiplier=initial_wait_s, max=max_wait_s)
            + wait_random(0, initial_wait_s),
            cap_s=max_wait_s,
        ),
        retry=retry_if_exception_type(RetryableError),
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )
