"""Property tests of the ``Limiter`` the workers really share (not only the bucket maths):
many concurrent callers, requests/min and tokens/min together, 429 cooldowns in between.
Time is virtual: ``anyio.sleep`` advances a fake clock, so minutes pass in milliseconds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from unittest import mock

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.dispatch.ratelimit import Limiter


@dataclass
class VirtualClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # At least one representable step: real time always moves on, even for a 1e-13 s sleep
        # that float rounding of a bucket refill can ask for.
        self.now = max(self.now + max(0.0, seconds), math.nextafter(self.now, math.inf))
        await anyio.lowlevel.checkpoint()


@dataclass
class Trace:
    sent: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens)
    pauses: list[tuple[int, float]] = field(default_factory=list)  # (sends before, until)


def simulate(rpm: float | None, tpm: float | None, demands: list[tuple[int, bool]],
             workers: int, cooldown_s: float) -> Trace:
    """``workers`` tasks take demands (tokens, got_429) in turn: acquire, "send", and on a 429
    pause everybody for ``cooldown_s``, as the runner does."""
    clock = VirtualClock()
    trace = Trace()
    queue = list(demands)

    async def worker(limiter: Limiter) -> None:
        while queue:
            tokens, rate_limited = queue.pop(0)
            await limiter.acquire(tokens)
            trace.sent.append((clock.now, tokens))
            if rate_limited:
                limiter.cooldown(cooldown_s)
                trace.pauses.append((len(trace.sent), clock.now + cooldown_s))
            await anyio.lowlevel.checkpoint()

    async def main() -> None:
        limiter = Limiter(rpm=rpm, tpm=tpm, clock=clock)
        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker, limiter)

    with mock.patch("anyio.sleep", clock.sleep):
        anyio.run(main)
    return trace


def max_in_window(sent: list[tuple[float, int]], window_s: float, weight: bool) -> float:
    """The most requests (or tokens) sent within any ``window_s`` span."""
    best = 0.0
    start = 0
    total = 0.0
    for when, tokens in sent:
        total += tokens if weight else 1
        while sent[start][0] < when - window_s:
            total -= sent[start][1] if weight else 1
            start += 1
        best = max(best, total)
    return best


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.one_of(st.none(), st.floats(6, 6000)),
    tpm=st.one_of(st.none(), st.floats(6_000, 600_000)),
    token_share=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=150),
    hits_429=st.lists(st.booleans(), min_size=150, max_size=150),
    workers=st.integers(1, 32),
    cooldown_s=st.floats(0.1, 30),
    window_s=st.floats(0.5, 120),
)
def test_no_window_ever_exceeds_the_configured_rates(
    rpm: float | None, tpm: float | None, token_share: list[float], hits_429: list[bool],
    workers: int, cooldown_s: float, window_s: float,
) -> None:
    token_capacity = (tpm / 60 * 6.0) if tpm else 10_000  # the limiter's 6 s token burst
    demands = [(max(1, int(share * token_capacity)), hit)
               for share, hit in zip(token_share, hits_429, strict=False)]
    trace = simulate(rpm, tpm, demands, workers, cooldown_s)
    assert len(trace.sent) == len(demands)  # everybody got through: no starvation
    times = [when for when, _ in trace.sent]
    assert times == sorted(times)  # one fair queue: virtual time never goes back
    if rpm:
        rate = rpm / 60
        capacity = max(1.0, rate)  # one second of flow
        assert max_in_window(trace.sent, window_s, weight=False) <= (
            capacity + rate * window_s + 1e-6)
    if tpm:
        rate = tpm / 60
        assert max_in_window(trace.sent, window_s, weight=True) <= (
            token_capacity + rate * window_s + 1e-6)
    # Nothing leaves during a pause that a 429 started.
    for sends_before, until in trace.pauses:
        assert all(when >= until - 1e-9 for when, _ in trace.sent[sends_before:])


@settings(max_examples=60, deadline=None)
@given(rpm=st.floats(60, 6000), workers=st.integers(1, 64))
def test_saturated_callers_get_the_full_rate(rpm: float, workers: int) -> None:
    demands = [(1, False)] * 300
    trace = simulate(rpm, None, demands, workers, 1.0)
    elapsed = trace.sent[-1][0] - trace.sent[0][0]
    # The first request goes at once, the other 299 one token interval apart.
    assert elapsed * rpm / 60 == pytest.approx(299, rel=1e-6)
