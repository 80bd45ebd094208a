"""Token bucket maths (pure, with a fake clock) and the async limiter's shared cooldown."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.ratesim import simulate

from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.dispatch.ratecontrol import CUT, KEPT, STEADY, TRIAL, UNDONE, RateController
from batchrun.dispatch.ratelimit import Limiter, TokenBucket
from batchrun.dispatch.refusals import Epoch


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


def test_announced_limit_is_kept_to_at_once_up_or_down() -> None:
    rate = RateController(configured=3000)
    assert rate.announce(600, 0.0) and rate.rate == pytest.approx(594)  # 99%: room for jitter
    assert not rate.announce(600, 1.0)  # nothing new
    assert rate.announce(1200, 2.0) and rate.rate == pytest.approx(1188)  # raised: follow it
    assert rate.announce(300, 3.0) and rate.rate == pytest.approx(297)  # lowered: follow it
    assert rate.announce(5000, 4.0) and rate.rate == 3000  # but never above --rpm
    unconfigured = RateController(configured=None)
    assert unconfigured.rate is None and unconfigured.announce(100, 0.0)
    assert unconfigured.rate == 99
    exact = RateController(configured=600)
    assert not exact.announce(600, 0.0) and exact.rate == 600  # --rpm at the limit, exactly


def _epoch(control: RateController, start: float, *, sent: int, refused: int) -> float:
    """Feed one second of traffic: ``sent`` requests evenly spread, ``refused`` of them
    refused (evenly among them), each answered at once. Returns the next second's start."""
    refusals = 0
    for number in range(sent):
        at = start + number / sent
        control.sent(at)
        if (number + 1) * refused // sent > refusals:
            refusals += 1
            control.refused(at)
        else:
            control.answered(at)
    return start + 1.0


def test_a_share_of_refusals_that_stays_when_we_send_less_is_learnt_as_background() -> None:
    control = RateController(configured=None)
    now = 0.0
    while control.decision != CUT and now < 10:  # 10% refused: looks like overload at first
        now = _epoch(control, now, sent=300, refused=30)
    assert control.decision == CUT and control.rate is not None and control.rate < 300 * 60
    now += control.settle_s
    while control.state == TRIAL and now < 20:  # the same 10% at the lower rate
        now = _epoch(control, now, sent=240, refused=24)
    # Back to no limit, after a second cut: the same share after one cut could still be a
    # limit that cut did not get under.
    assert control.decision == UNDONE and control.rate is None and control.cuts == 2
    assert control.background == pytest.approx(0.1, abs=0.02)
    for _ in range(30):  # from now on 10% is the gateway's, not ours: no more cuts
        now = _epoch(control, now, sent=300, refused=30)
    assert control.cuts == 2 and control.rate is None


def test_refusals_that_fall_when_we_send_less_keep_the_cut() -> None:
    control = RateController(configured=3000)
    now = _epoch(control, 0.0, sent=50, refused=40)  # the server takes 10/s of our 50/s
    assert control.decision == CUT
    cut_to = control.rate
    assert cut_to is not None and cut_to <= 600  # under what the server took
    now += control.settle_s
    while control.state == TRIAL and now < 30:
        now = _epoch(control, now, sent=max(1, int(cut_to / 60)), refused=0)
    assert control.decision == KEPT and control.rate == cut_to
    assert control.background == 0.0


def test_a_cut_whose_refusals_vanish_is_kept_without_waiting_out_the_trial() -> None:
    # 300/min: 5 answers a second. Refusals gone at the lower rate keep the cut as soon as
    # the evidence is 20 to 1, here two trial epochs, not the whole of max_trial_epochs (a
    # lower bar kept cuts that background refusals caused: 0.43 of the fault-free rate on
    # the virtual clock at 5-20% of them with --rpm 3000).
    control = RateController(configured=3000)
    cut_at = 0.0
    for number in range(180):  # 6/s sent, the server takes 5/s: every sixth refused
        cut_at = number / 6
        control.sent(cut_at)
        if number % 6 == 5:
            control.refused(cut_at)
        else:
            control.answered(cut_at)
        if control.decision == CUT:
            break
    assert control.decision == CUT
    now = cut_at + control.settle_s
    while control.state == TRIAL and now < cut_at + 60:
        now = _epoch(control, now, sent=4, refused=0)  # none refused at the lower rate
    assert control.decision == KEPT and control.background == 0.0
    assert now - cut_at <= control.settle_s + 2 * control.epoch_max_s + 1.0
    assert control.grow(1.0)  # and the climb back starts


def test_growth_is_fast_to_the_knee_gentle_near_the_limit_then_faster_and_faster() -> None:
    control = RateController(configured=3000, recover_s=10.0, probe_per_s=0.01)
    assert not control.grow(5.0)  # never cut: nothing to recover
    control._cut(0.0, Epoch(0.0, sent=50, ok=10, refused=40), 1.0)  # 480, knee at 570
    control.state = STEADY
    control.grow(5.0)
    assert control.rate == pytest.approx(480 + 45)  # (570 - 480) / 10 s per second
    control.grow(60.0)
    assert control.rate == pytest.approx(570)  # stops at the knee
    control.grow(1.0)
    assert control.rate == pytest.approx(570 * 1.01)  # 1% a second near the limit
    rates = []
    while control.rate < 1200:
        control.grow(1.0)
        rates.append(control.rate)
    assert len(rates) < 20  # a limit that doubled is found within seconds
    steps = [b / a for a, b in zip(rates, rates[1:], strict=False)]
    assert steps[-1] > steps[0]  # faster and faster
    control.announce(1000, 0.0)
    assert control.rate == pytest.approx(990) and not control.grow(100.0)


def test_a_429_announcing_the_limit_is_kept_to_without_a_pause() -> None:
    clock = {"now": 0.0}
    limiter = Limiter(rpm=3000, clock=lambda: clock["now"])
    assert not limiter.rate_limited(0.1, RateLimitInfo(limit_requests=600))
    assert limiter.rate_rpm == pytest.approx(594) and limiter.control.cuts == 0
    assert limiter.delay_for(0, clock["now"]) == 0.0  # keeping to the limit is the answer
    # The limit known and nothing left: the server says "too fast" outright.
    assert limiter.rate_limited(0.1, RateLimitInfo(limit_requests=600, remaining_requests=0))
    assert limiter.delay_for(0, clock["now"]) == pytest.approx(0.1)


def test_a_single_background_429_delays_nobody_else() -> None:
    clock = {"now": 0.0}
    limiter = Limiter(rpm=None, clock=lambda: clock["now"])
    for _ in range(100):
        assert limiter.acquire_now()
    assert not limiter.rate_limited(1.0)
    assert limiter.acquire_now() and limiter.cooldowns == 0 and limiter.rate_rpm is None


def test_after_a_429_requests_leave_one_by_one_not_as_a_burst() -> None:
    clock = {"now": 0.0}
    limiter = Limiter(rpm=None, clock=lambda: clock["now"])
    for _ in range(30):
        assert limiter.take_or_wait(0, clock["now"]) == 0  # unlimited: no bucket yet
    for _ in range(20):  # a flood of refusals: overload, whatever the background
        limiter.rate_limited(0.5)
    assert limiter.cooldowns == 1 and limiter.requests is not None  # the cut created one
    rate_per_s = limiter.requests.rate_per_s
    assert limiter.take_or_wait(0, 0.25) == pytest.approx(0.25)  # the pause
    clock["now"] = 0.5
    assert limiter.take_or_wait(0, clock["now"]) == 0  # one goes when it ends
    assert limiter.take_or_wait(0, clock["now"]) == pytest.approx(1 / rate_per_s)  # not two
    clock["now"] += 1 / rate_per_s + 1e-9
    assert limiter.take_or_wait(0, clock["now"]) == 0
    assert limiter.take_or_wait(0, clock["now"]) > 0


@pytest.mark.parametrize("headers", [True, False], ids=["announced", "blind"])
def test_an_unknown_lower_limit_is_found(headers: bool) -> None:
    run = simulate(seconds=120, configured=3000, server_rpm=lambda now: 600, headers=headers)
    # Announced, it is kept to at once; blind, only refusals tell, and a refusal alone no
    # longer cuts (it may be the gateway's), so finding the limit costs a few more of them.
    assert (run.bucket_429 / run.sent) < (0.002 if headers else 0.06)
    assert 0.85 * 600 <= run.ok_rate_between(60, 120) <= 1.02 * 600


def test_no_limit_configured_converges_after_the_first_wave() -> None:
    run = simulate(seconds=120, configured=None, server_rpm=lambda now: 600)
    assert 0.85 * 600 <= run.ok_rate_between(60, 120) <= 1.02 * 600
    assert run.bucket_429 / run.sent < 0.25  # the first waves of 64 at once, mostly


def test_running_at_the_servers_exact_limit_never_meets_a_429() -> None:
    run = simulate(seconds=120, configured=600, server_rpm=lambda now: 600)
    assert run.bucket_429 == 0
    assert run.ok_rate_between(10, 110) == pytest.approx(600, rel=0.01)


def test_acquire_now_lets_a_request_go_only_when_nothing_holds_it_back() -> None:
    clock = {"now": 100.0}
    free = Limiter(rpm=None, clock=lambda: clock["now"])
    assert free.acquire_now() and free.acquire_now()
    assert free.control.epoch.sent == 2  # counted as sent, like acquire()
    free.cooldown(5.0)  # a 429's pause holds everybody back
    assert not free.acquire_now()
    clock["now"] += 5.0
    assert free.acquire_now()
    # A rate to keep always goes through the awaiting path (its bucket and its lock).
    assert not Limiter(rpm=600, clock=lambda: clock["now"]).acquire_now()
