"""Token buckets for requests/min and tokens/min, and one shared cooldown after a 429.

``TokenBucket`` is pure arithmetic over a clock value handed in, so it is tested without
sleeping; ``Limiter`` is the async wrapper the workers share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio


@dataclass
class TokenBucket:
    """``rate_per_s`` tokens flow in per second up to ``capacity``; taking may go below zero
    only for a single request larger than the whole bucket (it then waits for a full bucket)."""

    rate_per_s: float
    capacity: float
    level: float
    updated_at: float

    @classmethod
    def per_minute(cls, per_minute: float, now: float, burst_s: float = 1.0) -> TokenBucket:
        """A bucket for a per-minute limit holding at most ``burst_s`` seconds of flow.

        A small burst keeps every 60-second window within the limit plus one burst, so a
        server counting per minute does not answer 429 when we run at its exact limit.
        """
        rate = per_minute / 60.0
        capacity = max(1.0, rate * burst_s)
        return cls(rate_per_s=rate, capacity=capacity, level=min(1.0, capacity), updated_at=now)

    def refill(self, now: float) -> None:
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + (now - self.updated_at) * self.rate_per_s)
            self.updated_at = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0 when it may be taken now)."""
        self.refill(now)
        needed = min(amount, self.capacity)  # an oversized request waits for a full bucket
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate_per_s

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def set_rate(self, per_minute: float, now: float, burst_s: float = 1.0) -> None:
        self.refill(now)
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, self.rate_per_s * burst_s)
        self.level = min(self.level, self.capacity)


class Limiter:
    """Gate every request through the request and token buckets and the shared cooldown.

    Waiters queue on one fair lock, so requests leave in arrival order and the buckets are
    never raced. A 429 pauses everybody (one cooldown), not just the worker that got it.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self.requests = TokenBucket.per_minute(rpm, now) if rpm else None
        self.tokens = TokenBucket.per_minute(tpm, now, burst_s=6.0) if tpm else None
        self.paused_until = 0.0
        self.cooldowns = 0
        self._lock = anyio.Lock()

    def delay_for(self, tokens: int, now: float) -> float:
        """Seconds to wait before a request of ``tokens`` may go (pure given ``now``)."""
        waits = [self.paused_until - now]
        if self.requests is not None:
            waits.append(self.requests.wait_time(1, now))
        if self.tokens is not None:
            waits.append(self.tokens.wait_time(tokens, now))
        return max(0.0, *waits)

    async def acquire(self, tokens: int = 0) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                delay = self.delay_for(tokens, now)
                if delay <= 0:
                    if self.requests is not None:
                        self.requests.take(1, now)
                    if self.tokens is not None:
                        self.tokens.take(tokens, now)
                    return
                await anyio.sleep(delay)

    def cooldown(self, seconds: float) -> None:
        """Pause all dispatch for ``seconds`` from now (the server said slow down)."""
        until = self._clock() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self.cooldowns += 1

    def settle_tokens(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real usage of a request is known."""
        if self.tokens is not None and actual >= 0:
            self.tokens.take(actual - estimated, self._clock())
