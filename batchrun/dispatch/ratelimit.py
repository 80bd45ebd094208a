"""Token buckets for requests/min and tokens/min, and the limiter every worker waits on.

``TokenBucket`` is pure arithmetic over clock values handed in; ``Limiter`` is the async
shell the workers share. The rate itself, and whether a 429 calls for slowing down at all,
is decided by ``ratecontrol.RateController`` (its docstring has the rules): a 429 caused by
our rate cuts the shared rate and pauses everybody for its Retry-After; a 429 the gateway
gives whatever we send (its upstream is busy) only delays that row's own retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.dispatch.ratecontrol import CUT, RateController

# Pause after a 429 that named no Retry-After.
DEFAULT_COOLDOWN_S = 1.0
# Rounding slack: a wait shorter than this would not even move the clock.
_EPSILON = 1e-9


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
        if self.level >= needed - _EPSILON:  # 0.9999999999999999 is a whole token
            return 0.0
        # Refill starts at ``updated_at``, which ``hold_until`` may have put in the future.
        return max(0.0, self.updated_at - now) + (needed - self.level) / self.rate_per_s

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def set_rate(self, per_minute: float, now: float, burst_s: float = 1.0) -> None:
        self.refill(now)
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, self.rate_per_s * burst_s)
        self.level = min(self.level, self.capacity)

    def hold_until(self, now: float, until: float) -> None:
        """Keep one request's worth at most and refill nothing before ``until`` (the end of a
        pause): one request may go when the pause ends, the next ones one by one, not as a
        burst saved up during the pause."""
        self.refill(now)
        self.level = min(self.level, 1.0)
        self.updated_at = max(self.updated_at, until)


class Limiter:
    """Gate every request through the request and token buckets and the shared pause.

    Waiters queue on one fair lock, so requests leave in arrival order and the buckets are
    never raced. Refusals that show overload pause everybody once and cut the shared rate,
    rather than each worker backing off on its own; the others delay only the refused row.
    Answers teach it the server's announced limits.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        control: RateController | None = None,
    ) -> None:
        self._clock = clock
        now = clock()
        self.control = control if control is not None else RateController(configured=rpm)
        rate = self.control.rate
        self.requests = TokenBucket.per_minute(rate, now) if rate else None
        self.tpm = tpm
        self.tokens = TokenBucket.per_minute(tpm, now, burst_s=6.0) if tpm else None
        self.paused_until = 0.0
        self.cooldowns = 0  # pauses of all dispatch (overload)
        self.refusals = 0  # every 429 about the rate, ours or the gateway's
        self._last_sent_at = now
        self._held_by_rate = False
        self._lock = anyio.Lock()

    @property
    def rate_rpm(self) -> float | None:
        """The request rate kept to now (None: not limited)."""
        return self.control.rate

    def delay_for(self, tokens: int, now: float) -> float:
        """Seconds to wait before a request of ``tokens`` may go (pure given ``now``)."""
        waits = [self.paused_until - now]
        if self.requests is not None:
            waits.append(self.requests.wait_time(1, now))
        if self.tokens is not None:
            waits.append(self.tokens.wait_time(tokens, now))
        return max(0.0, *waits)

    def acquire_now(self, tokens: int = 0) -> bool:
        """Count a request as sent when nothing holds it back (no rate to keep, no pause);
        False when it must ``await acquire``. A run asks this first: no coroutine per request."""
        if self.requests is None and self.tokens is None and not self._lock.locked():
            now = self._clock()
            if now >= self.paused_until:
                self._sent(now)  # nothing to keep to: no lock, no checkpoint
                return True
        return False

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of ``tokens`` may go, and count it as sent."""
        if self.acquire_now(tokens):
            return
        async with self._lock:
            while (delay := self.take_or_wait(tokens, self._clock())) > 0:
                await anyio.sleep(delay)

    def take_or_wait(self, tokens: int, now: float) -> float:
        """Let one request go now (0.0) or say how many seconds to wait first (pure given
        ``now``; ``acquire`` calls it under the lock, simulations call it with their clock)."""
        delay = self.delay_for(tokens, now)
        if delay > 0:
            if self.requests is not None and self.requests.wait_time(1, now) > 0:
                self._held_by_rate = True
            return delay
        if self.requests is not None:
            self.requests.take(1, now)
            # Held back by the rate: demand is above it, so probe whether the server allows more.
            if self._held_by_rate and self.control.grow(now - self._last_sent_at):
                self._apply_rate(now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)
        self._held_by_rate = False
        self._sent(now)
        return 0.0

    def take_ahead(self, tokens: int, now: float, within_s: float) -> bool:
        """Count one more request as sent now if the buckets refill its share within
        ``within_s`` (they go below zero, so later requests wait for it): permits handed out
        ahead, to be sent over the next ``within_s`` (a cluster's leases)."""
        requests, token_bucket = self.requests, self.tokens
        if requests is not None:
            requests.refill(now)
            if requests.level - 1 < -requests.rate_per_s * within_s:
                return False
        if token_bucket is not None:
            token_bucket.refill(now)
            if token_bucket.level - tokens < -token_bucket.rate_per_s * within_s:
                return False
        if requests is not None:
            requests.take(1, now)
        if token_bucket is not None:
            token_bucket.take(tokens, now)
        self._sent(now)
        return True

    def requests_per_s(self, tokens: int) -> float:
        """The request rate the buckets allow for requests of ``tokens``: requests/min, or
        tokens/min over ``tokens``, whichever is less (0.0: no bucket)."""
        rates = []
        if self.requests is not None:
            rates.append(self.requests.rate_per_s)
        if self.tokens is not None:
            rates.append(self.tokens.rate_per_s / max(1, tokens))
        return min(rates) if rates else 0.0

    def sent_elsewhere(self, count: int) -> None:
        """``count`` requests went out without asking (a cluster worker's window without
        limit): the rate controller counts them as sent now."""
        now = self._clock()
        for _ in range(count):
            self._sent(now)

    def _sent(self, now: float) -> None:
        self.control.sent(now)
        self._last_sent_at = now

    def answered(self, rate_limit: RateLimitInfo | None = None) -> None:
        """A request was served; ``rate_limit`` is what its headers said, if anything."""
        now = self._clock()
        if rate_limit is not None:
            self._learn(rate_limit, now)
        if self.control.answered(now):
            self._apply_rate(now)

    def rate_limited(self, retry_after: float | None,
                     rate_limit: RateLimitInfo | None = None) -> bool:
        """A 429 rate_limit_exceeded came back. True when it showed overload: the rate was
        cut and everybody pauses for ``retry_after``; otherwise only the row's own retry waits.
        """
        now = self._clock()
        self.refusals += 1
        if rate_limit is not None and self._learn(rate_limit, now):
            return False  # a lower limit announced: keeping to it is the answer
        control = self.control
        changed = control.refused(now)
        if changed:
            self._apply_rate(now)  # a cut, or a cut undone (the refusals were not ours)
        announced_empty = rate_limit is not None and rate_limit.remaining_requests == 0
        if not (changed and control.decision == CUT) and not announced_empty:
            return False
        self.cooldown(retry_after if retry_after is not None else DEFAULT_COOLDOWN_S)
        control.pause_over(self.paused_until)
        if self.requests is not None:
            self.requests.hold_until(now, self.paused_until)
        return True

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

    def describe(self) -> str:
        """The rate kept to and why, for the progress display."""
        return self.control.describe()

    def _learn(self, info: RateLimitInfo, now: float) -> bool:
        """Take the limits the server announced; True when the request rate changed."""
        changed = bool(info.limit_requests) and self.control.announce(
            float(info.limit_requests or 0), now)
        if changed:
            self._apply_rate(now)
        if info.limit_tokens and (self.tpm is None or info.limit_tokens < self.tpm):
            self.tpm = float(info.limit_tokens)
            if self.tokens is None:
                self.tokens = TokenBucket.per_minute(self.tpm, now, burst_s=6.0)
            else:
                self.tokens.set_rate(self.tpm, now, burst_s=6.0)
        return changed

    def _apply_rate(self, now: float) -> None:
        rate = self.control.rate
        if rate is None:
            self.requests = None  # a cut undone back to no limit at all
        elif self.requests is None:
            self.requests = TokenBucket.per_minute(rate, now)
        else:
            self.requests.set_rate(rate, now)
