"""Token bucket maths (pure, with a fake clock) and the async limiter's shared cooldown."""

from __future__ import annotations

import heapq

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.dispatch.ratelimit import AdaptiveRate, Limiter, RateMeter, TokenBucket


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


# ---------------------------------------------------------------- the adaptive rate (pure)


def test_rate_meter_counts_over_its_window_and_forgets_old_slices() -> None:
    meter = RateMeter(window_s=2.0, slots=8)
    assert meter.per_minute(0.0) is None
    for tick in range(40):  # 10/s for 4 s
        meter.add(tick * 0.1)
    assert meter.per_minute(3.95) == pytest.approx(600, rel=0.1)
    assert meter.per_minute(20.0) == 0  # nothing for long: every slice dropped
    burst = RateMeter()
    for _ in range(64):
        burst.add(100.0)  # 64 at one instant is not 64 per millisecond
    assert burst.per_minute(100.01) == pytest.approx(64 * 60)


def test_announced_limit_caps_and_can_raise_an_untouched_rate() -> None:
    rate = AdaptiveRate(configured=3000)
    assert rate.announce(600) and rate.rate == pytest.approx(594)  # 99%: room for jitter
    assert not rate.announce(600)  # nothing new
    assert rate.announce(1200) and rate.rate == pytest.approx(1188)  # never cut: follow it
    assert rate.announce(5000) and rate.rate == 3000  # but never above --rpm
    unconfigured = AdaptiveRate(configured=None)
    assert unconfigured.rate is None and unconfigured.announce(100) and unconfigured.rate == 99
    exact = AdaptiveRate(configured=600)
    assert not exact.announce(600) and exact.rate == 600  # --rpm at the limit is kept exactly


def test_a_429_cuts_once_per_overload_from_what_the_server_served() -> None:
    rate = AdaptiveRate(configured=3000, decrease=0.8, hold_s=1.0)
    assert rate.rate_limited(10.0, accepted_rpm=600, sent_rpm=2900)
    assert rate.rate == pytest.approx(480) and rate.estimate == 600
    assert not rate.rate_limited(10.5, accepted_rpm=600, sent_rpm=480)  # same overload
    assert rate.rate == pytest.approx(480)
    assert rate.rate_limited(11.5, accepted_rpm=None, sent_rpm=500)  # no answers: what we sent
    assert rate.rate == pytest.approx(384)
    nothing = AdaptiveRate(configured=None)
    assert not nothing.rate_limited(0.0, accepted_rpm=None, sent_rpm=None) and nothing.rate is None


def test_growth_is_fast_to_the_knee_then_slow_and_never_above_the_ceiling() -> None:
    rate = AdaptiveRate(configured=3000, decrease=0.8, probe_per_s=0.005, recover_s=10.0)
    assert not rate.grow(5.0)  # never cut: nothing to recover
    rate.rate_limited(0.0, accepted_rpm=600, sent_rpm=None)  # 480, knee at 570
    rate.grow(5.0)
    assert rate.rate == pytest.approx(480 + 45)  # (570 - 480) / 10 s per second
    rate.grow(60.0)
    assert rate.rate == pytest.approx(570)  # stops at the knee
    rate.grow(10.0)
    assert rate.rate == pytest.approx(570 + 10 * 480 * 0.005)  # then 0.5% of 480 a second
    rate.announce(585)
    rate.grow(100.0)
    assert rate.rate == pytest.approx(585 * 0.99)


def test_a_429_announcing_the_limit_is_kept_to_without_a_cut() -> None:
    clock = {"now": 0.0}
    limiter = Limiter(rpm=3000, clock=lambda: clock["now"])
    limiter.rate_limited(0.1, RateLimitInfo(limit_requests=600))
    assert limiter.rate_rpm == pytest.approx(594) and limiter.adaptive.cuts == 0
    assert limiter.delay_for(0, clock["now"]) == pytest.approx(0.1)  # the cooldown
    limiter.rate_limited(0.1, RateLimitInfo(limit_requests=600))  # still refused at 600
    assert limiter.adaptive.cuts == 1 and limiter.rate_rpm == pytest.approx(594 * 0.8)


def test_after_a_429_requests_leave_one_by_one_not_as_a_burst() -> None:
    clock = {"now": 0.0}
    limiter = Limiter(rpm=None, clock=lambda: clock["now"])
    for _ in range(30):
        assert limiter.take_or_wait(0, clock["now"]) == 0  # unlimited: no bucket yet
    limiter.rate_limited(0.5)
    assert limiter.requests is not None  # the cut created one
    rate_per_s = limiter.requests.rate_per_s
    assert limiter.take_or_wait(0, 0.25) == pytest.approx(0.25)  # the pause
    clock["now"] = 0.5
    assert limiter.take_or_wait(0, clock["now"]) == 0  # one goes when it ends
    assert limiter.take_or_wait(0, clock["now"]) == pytest.approx(1 / rate_per_s)  # not two
    clock["now"] += 1 / rate_per_s + 1e-9
    assert limiter.take_or_wait(0, clock["now"]) == 0
    assert limiter.take_or_wait(0, clock["now"]) > 0


def simulate(configured: float | None, server_rpm: float, seconds: float, *,
             headers: bool, latency_s: float = 0.2,
             workers: int = 64) -> tuple[int, int, list[float]]:
    """``workers`` with endless rows behind a Limiter against a server's token bucket (1 s
    burst), on a simulated clock. 429s come back at once with Retry-After, answers after
    ``latency_s``. Returns (requests sent, 429s, times of the answers)."""
    clock = [0.0]
    limiter = Limiter(rpm=configured, clock=lambda: clock[0])
    flow = server_rpm / 60.0
    server = TokenBucket(rate_per_s=flow, capacity=max(1.0, flow), level=max(1.0, flow),
                         updated_at=0.0)
    info = RateLimitInfo(limit_requests=int(server_rpm)) if headers else None
    in_flight: list[tuple[float, int, float | None]] = []  # (time, seq, retry_after or None)
    sent = limited = 0
    answered: list[float] = []

    def deliver_next() -> None:
        at, _, retry_after = heapq.heappop(in_flight)
        clock[0] = max(clock[0], at)
        if retry_after is None:
            answered.append(at)
            limiter.answered(info)
        else:
            limiter.rate_limited(retry_after, info)

    while clock[0] < seconds:
        if len(in_flight) >= workers:
            deliver_next()  # every worker is waiting for an answer
            continue
        delay = limiter.take_or_wait(0, clock[0])
        if delay > 0:
            if in_flight and in_flight[0][0] <= clock[0] + delay:
                deliver_next()
            else:
                clock[0] += delay
            continue
        sent += 1
        wait = server.wait_time(1, clock[0])
        if wait == 0:
            server.take(1, clock[0])
            heapq.heappush(in_flight, (clock[0] + latency_s, sent, None))
        else:
            limited += 1
            heapq.heappush(in_flight, (clock[0] + 0.001, sent, wait))
    return sent, limited, answered


def _rate_between(times: list[float], start: float, end: float) -> float:
    return sum(1 for t in times if start <= t < end) * 60.0 / (end - start)


@pytest.mark.parametrize("headers", [True, False], ids=["announced", "blind"])
def test_an_unknown_lower_limit_is_found_with_few_429s(headers: bool) -> None:
    sent, limited, answered = simulate(3000, 600, 120, headers=headers)
    assert limited / sent < (0.002 if headers else 0.03)
    late = _rate_between(answered, 60, 120)
    assert 0.85 * 600 <= late <= 1.02 * 600


def test_no_limit_configured_converges_after_the_first_wave() -> None:
    sent, limited, answered = simulate(None, 600, 120, headers=False)
    assert 0.85 * 600 <= _rate_between(answered, 60, 120) <= 1.02 * 600
    assert limited / sent < 0.05


def test_running_at_the_servers_exact_limit_never_meets_a_429() -> None:
    sent, limited, answered = simulate(600, 600, 120, headers=False)
    assert limited == 0
    assert _rate_between(answered, 10, 110) == pytest.approx(600, rel=0.01)


def test_acquire_now_lets_a_request_go_only_when_nothing_holds_it_back() -> None:
    clock = {"now": 100.0}
    free = Limiter(rpm=None, clock=lambda: clock["now"])
    assert free.acquire_now() and free.acquire_now()
    assert free.sent.count(clock["now"]) == 2  # counted as sent, like acquire()
    free.cooldown(5.0)  # a 429's pause holds everybody back
    assert not free.acquire_now()
    clock["now"] += 5.0
    assert free.acquire_now()
    # A rate to keep always goes through the awaiting path (its bucket and its lock).
    assert not Limiter(rpm=600, clock=lambda: clock["now"]).acquire_now()
