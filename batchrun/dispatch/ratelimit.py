"""Token buckets for requests/min and tokens/min, one shared cooldown after a 429, and the
adaptive request rate that finds the server's limit when it is unknown or lower than ours.

``TokenBucket``, ``RateMeter`` and ``AdaptiveRate`` are pure arithmetic over clock values handed
in, so they are tested without sleeping; ``Limiter`` is the async wrapper the workers share.

How the adaptive rate behaves (additive increase, multiplicative decrease, as TCP does):
- a limit the server announces (``x-ratelimit-limit-requests``, read as requests per minute
  as OpenAI-style gateways send it) caps the rate at once, like a lower ``--rpm`` (at 99% of
  it, see ``AdaptiveRate.ceiling``);
- a 429 cuts the rate to ``decrease`` × the rate the server accepted over the last two
  seconds (what we sent less what it refused; never more than the rate we were keeping to);
  the 429s of one overload are one signal, so a cut is followed by ``hold_s`` without another;
- after a cut, requests leave one by one once the pause is over, never as a saved-up burst;
- while workers are waiting on the rate, it climbs back: within ``recover_s`` to 95% of the
  limit last measured, then slowly (``probe_per_s`` of the rate set at the cut, per second)
  to learn whether the server allows more now; never above ``--rpm`` or the announced limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from batchrun.core.ratelimit_info import RateLimitInfo

# Pause after a 429 that named no Retry-After.
DEFAULT_COOLDOWN_S = 1.0
# Share of an announced limit we keep to when it is below --rpm.
ANNOUNCED_SHARE = 0.99
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


class RateMeter:
    """How many events per minute happened over the last ``window_s`` (pure: times handed in).

    Counts go into ``slots`` fixed slices of the window; the oldest slice is dropped as time
    moves on, so the figure follows changes within one window.
    """

    __slots__ = ("slot_s", "counts", "current", "first_at")

    def __init__(self, window_s: float = 2.0, slots: int = 8) -> None:
        self.slot_s = window_s / slots
        self.counts = [0] * slots
        self.current = 0  # absolute number of the newest slice
        self.first_at: float | None = None

    def add(self, now: float, count: int = 1) -> None:
        if self.first_at is None:
            self.first_at = now
        slot = self._advance(now)
        self.counts[slot % len(self.counts)] += count

    def count(self, now: float) -> int:
        """Events in the window."""
        self._advance(now)
        return sum(self.counts)

    def span(self, now: float) -> float:
        """Seconds the window covers so far: since the first event, at most the window, and
        at least a second (a burst in the first instants is not a rate)."""
        if self.first_at is None:
            return 0.0
        slot = self._advance(now)
        window_s = self.slot_s * (len(self.counts) - 1) + (now - slot * self.slot_s)
        return max(min(window_s, now - self.first_at), min(1.0, window_s))

    def per_minute(self, now: float) -> float | None:
        """Events per minute over the window (or since the first event); None before any."""
        span = self.span(now)
        return self.count(now) * 60.0 / span if span > 0 else None

    def _advance(self, now: float) -> int:
        slot = int(now // self.slot_s)
        if slot > self.current:
            for gone in range(self.current + 1, min(slot, self.current + len(self.counts)) + 1):
                self.counts[gone % len(self.counts)] = 0
            self.current = slot
        return self.current


@dataclass
class AdaptiveRate:
    """The request rate to keep to, in requests/min; None while there is nothing to keep to."""

    configured: float | None  # --rpm: never exceeded
    decrease: float = 0.8
    probe_per_s: float = 0.005  # slow climb: this share of the rate set at the last cut, per s
    recover_s: float = 10.0  # fast climb back to 95% of the estimated limit takes this long
    hold_s: float = 1.0
    min_rpm: float = 1.0
    server_limit: float | None = None
    rate: float | None = field(default=None, init=False)
    estimate: float | None = field(default=None, init=False)  # the limit as last measured
    fast_step_per_s: float = field(default=0.0, init=False)
    slow_step_per_s: float = field(default=0.0, init=False)
    cut_at: float = field(default=-math.inf, init=False)
    cuts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rate = self.configured

    @property
    def ceiling(self) -> float | None:
        """--rpm, or the announced limit when that is lower: then a hair under it, so that the
        server's bucket, drained by what we sent before we knew, fills up again and absorbs
        the jitter of arrival times."""
        if self.server_limit is None:
            return self.configured
        if self.configured is not None and self.configured <= self.server_limit:
            return self.configured
        return self.server_limit * ANNOUNCED_SHARE

    def announce(self, limit_rpm: float) -> bool:
        """The server said its limit; True when the rate changed."""
        if limit_rpm <= 0 or limit_rpm == self.server_limit:
            return False
        self.server_limit = limit_rpm
        ceiling = self.ceiling
        assert ceiling is not None
        # Never cut yet: keep to the limit as it is now, higher or lower than before.
        if self.rate is None or self.rate > ceiling or self.cuts == 0:
            changed = self.rate != ceiling
            self.rate = ceiling
            return changed
        return False

    def rate_limited(self, now: float, accepted_rpm: float | None,
                     sent_rpm: float | None) -> bool:
        """A 429 came back; True when it cut the rate (the first of an overload does).

        ``accepted_rpm`` (what we sent over the last seconds less what was refused) is what the
        server let through while refusing more: the estimate of its limit. Answers would say
        the same a latency later; refusals come back at once.
        """
        if now - self.cut_at < self.hold_s:
            # The same overload: lower the rate to what the count of refusals now says,
            # without cutting again from the rate just cut (that would compound).
            if accepted_rpm and self.rate is not None and \
                    accepted_rpm * self.decrease < self.rate:
                self.estimate = accepted_rpm
                self.rate = max(self.min_rpm, accepted_rpm * self.decrease)
                self.fast_step_per_s = max(0.0, 0.95 * accepted_rpm - self.rate) / self.recover_s
                self.slow_step_per_s = self.rate * self.probe_per_s
                return True
            return False
        measured = accepted_rpm if accepted_rpm and accepted_rpm > 0 else sent_rpm
        measures = [x for x in (self.rate, measured) if x is not None and x > 0]
        if not measures:
            return False  # nothing sent yet that we could measure: the cooldown must do
        self.estimate = min(measures)
        self.rate = max(self.min_rpm, self.estimate * self.decrease)
        self.fast_step_per_s = max(0.0, 0.95 * self.estimate - self.rate) / self.recover_s
        self.slow_step_per_s = self.rate * self.probe_per_s
        self.cut_at = now
        self.cuts += 1
        return True

    def grow(self, seconds: float) -> bool:
        """Workers waited on the rate for ``seconds``: climb back; True when it changed.

        Fast up to 95% of the limit last measured, then slowly, to find out whether the
        server allows more now.
        """
        if self.rate is None or seconds <= 0 or self.cuts == 0:
            return False
        ceiling = self.ceiling
        if ceiling is not None and self.rate >= ceiling:
            return False
        knee = 0.95 * self.estimate if self.estimate is not None else 0.0
        step = self.fast_step_per_s if self.rate < knee else 0.0
        grown = self.rate + max(step, self.slow_step_per_s) * seconds
        if self.rate < knee < grown and step > self.slow_step_per_s:
            grown = knee
        self.rate = min(grown, ceiling) if ceiling is not None else grown
        return True


class Limiter:
    """Gate every request through the request and token buckets and the shared cooldown.

    Waiters queue on one fair lock, so requests leave in arrival order and the buckets are
    never raced. A 429 pauses everybody (one cooldown) and cuts the shared rate, rather than
    each worker backing off on its own; answers teach it the server's announced limits.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self.adaptive = AdaptiveRate(configured=rpm)
        self.requests = TokenBucket.per_minute(rpm, now) if rpm else None
        self.tpm = tpm
        self.tokens = TokenBucket.per_minute(tpm, now, burst_s=6.0) if tpm else None
        self.paused_until = 0.0
        self.cooldowns = 0
        self.sent = RateMeter()
        self.refused = RateMeter()
        self._last_sent_at = now
        self._held_by_rate = False
        self._lock = anyio.Lock()

    @property
    def rate_rpm(self) -> float | None:
        """The request rate kept to now (None: not limited)."""
        return self.adaptive.rate

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
            if self._held_by_rate and self.adaptive.grow(now - self._last_sent_at):
                self._apply_rate(now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)
        self._held_by_rate = False
        self._sent(now)
        return 0.0

    def _sent(self, now: float) -> None:
        self.sent.add(now)
        self._last_sent_at = now

    def answered(self, rate_limit: RateLimitInfo | None = None) -> None:
        """A request was served; ``rate_limit`` is what its headers said, if anything."""
        if rate_limit is not None:
            self._learn(rate_limit, self._clock())

    def rate_limited(self, retry_after: float | None,
                     rate_limit: RateLimitInfo | None = None) -> None:
        """A 429 came back: pause everybody, then go on at a lower rate."""
        now = self._clock()
        self.refused.add(now)
        self.cooldown(retry_after if retry_after is not None else DEFAULT_COOLDOWN_S)
        told = rate_limit is not None and self._learn(rate_limit, now)
        # A 429 that announced a lower limit has been answered by keeping to it.
        if not told and self.adaptive.rate_limited(now, self._accepted_rpm(now),
                                                   self.sent.per_minute(now)):
            self._apply_rate(now)
        if self.requests is not None:
            self.requests.hold_until(now, self.paused_until)

    def _accepted_rpm(self, now: float) -> float | None:
        span = self.sent.span(now)
        if span <= 0:
            return None
        return (self.sent.count(now) - self.refused.count(now)) * 60.0 / span

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

    def _learn(self, info: RateLimitInfo, now: float) -> bool:
        """Take the limits the server announced; True when the request rate changed."""
        changed = bool(info.limit_requests) and self.adaptive.announce(
            float(info.limit_requests or 0))
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
        rate = self.adaptive.rate
        if rate is None:
            return
        if self.requests is None:
            self.requests = TokenBucket.per_minute(rate, now)
        else:
            self.requests.set_rate(rate, now)
