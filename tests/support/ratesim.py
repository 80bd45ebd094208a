"""A gateway and a pool of workers on a virtual clock, to drive the real ``Limiter``.

The gateway has a token bucket (1 s burst) whose rate may step over time, and refuses a share
of requests at random whatever the rate ("background" 429s, Retry-After: 1, answered at once).
Workers hold a wire slot only while a request is out: a refused row waits its own Retry-After
(plus jitter) apart, then queues again, as the runner does.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.dispatch.ratelimit import Limiter, TokenBucket


@dataclass
class SimResult:
    sent: int = 0
    ok: int = 0
    background_429: int = 0
    bucket_429: int = 0
    answered_at: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    rates: list[tuple[float, float | None]] = field(default_factory=list)  # (time, rate kept)

    def ok_rate_between(self, start: float, end: float) -> float:
        """Answers per minute in [start, end)."""
        return sum(1 for t in self.answered_at if start <= t < end) * 60.0 / (end - start)

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.sent_at if start <= t < end)

    def min_rate_after(self, start: float) -> float | None:
        kept = [rate for at, rate in self.rates if at >= start and rate is not None]
        return min(kept) if kept else None


def simulate(
    *,
    seconds: float,
    configured: float | None = None,
    server_rpm: Callable[[float], float | None] = lambda now: None,
    background: float = 0.0,
    headers: bool = False,
    latency_s: float = 0.2,
    workers: int = 64,
    seed: int = 1,
    retry_after_s: float | None = 1.0,
) -> SimResult:
    """Run workers with endless rows for ``seconds`` of virtual time."""
    rng = random.Random(seed)
    clock = [0.0]
    limiter = Limiter(rpm=configured, clock=lambda: clock[0])
    result = SimResult()
    bucket: TokenBucket | None = None
    bucket_rpm: float | None = None
    # Events: (time, seq, kind, retry_after): kind "ok", "bg" (background 429), "rpm" (bucket 429)
    events: list[tuple[float, int, str, float | None]] = []
    ready_retries: list[float] = []  # due times of rows waiting apart on their Retry-After
    on_wire = 0
    seq = 0

    def server_bucket(now: float) -> tuple[TokenBucket | None, float | None]:
        nonlocal bucket, bucket_rpm
        rpm = server_rpm(now)
        if rpm != bucket_rpm:
            if rpm is None:
                bucket = None
            elif bucket is None:
                bucket = TokenBucket.per_minute(rpm, now)
                bucket.level = bucket.capacity
            else:
                bucket.set_rate(rpm, now)
            bucket_rpm = rpm
        return bucket, bucket_rpm

    def info(rpm: float | None, empty: bool) -> RateLimitInfo | None:
        if not headers or rpm is None:
            return None
        return RateLimitInfo(limit_requests=int(rpm), remaining_requests=0 if empty else None)

    def deliver() -> None:
        nonlocal on_wire
        at, _, kind, retry_after = heapq.heappop(events)
        clock[0] = max(clock[0], at)
        on_wire -= 1
        _, rpm = server_bucket(clock[0])
        if kind == "ok":
            result.ok += 1
            result.answered_at.append(clock[0])
            limiter.answered(info(rpm, False))
        else:
            limiter.rate_limited(retry_after, info(rpm, True) if kind == "rpm" else None)
            wait = retry_after if retry_after is not None else 0.5 + rng.random() * 0.5
            heapq.heappush(ready_retries, clock[0] + wait * (1.0 + 0.1 * rng.random()))
        result.rates.append((clock[0], limiter.rate_rpm))

    while clock[0] < seconds:
        next_event = events[0][0] if events else float("inf")
        if on_wire >= workers:
            deliver()
            continue
        delay = limiter.take_or_wait(0, clock[0])
        if delay > 0:
            if next_event <= clock[0] + delay:
                deliver()
            else:
                clock[0] += delay
            continue
        # A worker is free and the limiter lets one go: a due retry first, else a new row.
        if ready_retries and ready_retries[0] <= clock[0]:
            heapq.heappop(ready_retries)
        seq += 1
        on_wire += 1
        result.sent += 1
        result.sent_at.append(clock[0])
        server, _ = server_bucket(clock[0])
        if background and rng.random() < background:
            result.background_429 += 1
            heapq.heappush(events, (clock[0] + 0.001, seq, "bg", retry_after_s))
        elif server is not None and server.wait_time(1, clock[0]) > 0:
            result.bucket_429 += 1
            # Retry-After in whole seconds, at least one, as the emulator (and HTTP) give it.
            heapq.heappush(events, (clock[0] + 0.001, seq, "rpm",
                                    float(max(1, math.ceil(server.wait_time(1, clock[0]))))))
        else:
            if server is not None:
                server.take(1, clock[0])
            heapq.heappush(events, (clock[0] + latency_s, seq, "ok", None))
    return result


def steps(*schedule: tuple[float, float]) -> Callable[[float], float | None]:
    """A server limit stepping at the given (seconds, requests/min) points."""
    def rpm_at(now: float) -> float | None:
        current = None
        for at, rpm in schedule:
            if now >= at:
                current = rpm
        return current
    return rpm_at
