"""Token bucket maths (pure, with a fake clock) and the async limiter's shared cooldown."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.ratelimit import Limiter, TokenBucket


def _dispatch_times(per_minute: float, demand: list[float], horizon_s: float) -> list[float]:
    """Simulate greedy callers: each wants to send at its demand time or as soon as allowed."""
    bucket = TokenBucket.per_minute(per_minute, now=0.0)
    sent: list[float] = []
    now = 0.0
    for wanted in sorted(demand):
        now = max(now, wanted)
        wait = bucket.wait_time(1, now)
        now += wait
        if now > horizon_s:
            break
        bucket.take(1, now)
        sent.append(now)
    return sent


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.floats(min_value=1, max_value=6000),
    demand=st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=400),
    window_s=st.floats(min_value=0.5, max_value=60),
)
def test_no_window_exceeds_the_rate(
    per_minute: float, demand: list[float], window_s: float
) -> None:
    sent = _dispatch_times(per_minute, demand, horizon_s=180)
    rate = per_minute / 60
    capacity = max(1.0, rate)
    start = 0
    for end, when in enumerate(sent):
        while sent[start] < when - window_s:
            start += 1
        in_window = end - start + 1
        assert in_window <= capacity + rate * window_s + 1e-6


def test_full_demand_runs_at_the_configured_rate() -> None:
    sent = _dispatch_times(600, [0.0] * 2000, horizon_s=120)
    # 600/min over 120 s, starting from one token: 1 + 1200 requests.
    assert 1195 <= len(sent) <= 1202


def test_oversized_request_waits_for_a_full_bucket_then_goes() -> None:
    bucket = TokenBucket.per_minute(60, now=0.0)  # 1 token/s, capacity 1
    assert bucket.wait_time(10, 0.0) == pytest.approx(0.0)
    bucket.take(10, 0.0)
    assert bucket.wait_time(1, 0.0) == pytest.approx(10.0)


def test_cooldown_pauses_every_caller() -> None:
    clock = {"now": 100.0}
    limiter = Limiter(rpm=None, clock=lambda: clock["now"])
    limiter.cooldown(5.0)
    assert limiter.delay_for(0, clock["now"]) == pytest.approx(5.0)
    clock["now"] += 3
    assert limiter.delay_for(0, clock["now"]) == pytest.approx(2.0)
    limiter.cooldown(1.0)  # a shorter cooldown never shortens the pause
    assert limiter.delay_for(0, clock["now"]) == pytest.approx(2.0)


def test_limiter_acquire_paces_real_time() -> None:
    async def main() -> float:
        limiter = Limiter(rpm=600)  # 10/s
        start = anyio.current_time()
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(limiter.acquire, 0)
        return anyio.current_time() - start

    elapsed = anyio.run(main)
    # First token is there at once, the next five come 0.1 s apart.
    assert 0.45 <= elapsed < 1.5
