"""The budget's arithmetic and its async gate, without a server."""

from __future__ import annotations

import random

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.core.errors import TransportError, UpstreamError
from batchrun.core.result import Completion
from batchrun.cost.budget import (
    ROUNDING_MARGIN,
    BudgetExhausted,
    BudgetGate,
    CreditLedger,
    billed_credits,
    cap_reached_lines,
    prompt_token_bound,
)
from batchrun.cost.catalog import CATALOG, Price, model_facts
from batchrun.cost.tokens import messages_estimate
from batchrun.emulator.model import parse_chat_request

PRICE = CATALOG["gemini-3.1-pro"].price


def test_the_default_output_bound_is_the_models_limit() -> None:
    assert model_facts("gemini-3.1-pro").output_token_limit == 65_536
    assert model_facts("gemini-3.1-pro-preview").output_token_limit == 65_536
    ledger = CreditLedger.for_job(100.0, "gemini-3.1-pro")
    assert ledger.output_bound == 65_536 and "output limit" in ledger.output_bound_source
    tight = CreditLedger.for_job(100.0, "gemini-3.1-pro", output_bound=400)
    assert tight.output_bound == 400 and "max_output_tokens_bound" in tight.output_bound_source
    messages = [{"role": "user", "content": "x" * 100}]
    assert tight.request_credits(prompt_token_bound(messages), PRICE) == pytest.approx(
        PRICE.credits(104, 400) + ROUNDING_MARGIN
    )


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=4),
       system=st.one_of(st.none(), st.text(max_size=100)))
def test_the_prompt_bound_holds_for_any_text(texts: list[str], system: str | None) -> None:
    """One token per UTF-8 byte bounds any byte-fallback tokenizer; the emulator at its most
    expensive plausible setting (one token per character) stays under it, and so does the
    estimate."""
    messages: list[dict[str, object]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": [{"type": "text", "text": t} for t in texts]})
    body = orjson.dumps({"model": "gemini-3.1-pro", "messages": messages})
    bound = prompt_token_bound(messages)
    assert parse_chat_request(body, chars_per_token=1.0).prompt_tokens <= bound
    assert messages_estimate(messages).prompt_tokens <= bound


def test_the_ledger_reserves_settles_and_releases() -> None:
    ledger = CreditLedger(cap=10.0, output_bound=100, model_output_limit=65_536)
    first = ledger.reserve(4.0)
    second = ledger.reserve(4.0)
    assert not ledger.fits(4.0) and ledger.can_ever_fit(4.0)  # wait: room is only held
    ledger.settle(first, 1.5)
    assert ledger.fits(4.0) and ledger.spent == 1.5
    ledger.release(second)  # an error answer: not billed
    assert ledger.reserved == 0.0 and ledger.in_flight == 0 and ledger.spent == 1.5
    third = ledger.reserve(8.5)
    ledger.settle(third, None)  # cost unknown: the whole reservation is spent
    assert ledger.spent == 10.0 and not ledger.can_ever_fit(0.01)
    assert ledger.unknown_costs == 1 and ledger.unknown_credits == 8.5
    said = "\n".join(cap_reached_lines(ledger, rows_pending=3, credits_per_row=1.5,
                                       resume_command="batchrun run m.jsonl --out run"))
    assert "10.0000 of 10.0000 credits spent" in said
    assert "of which 8.5000 credits are 1 answers of unknown cost" in said
    with pytest.raises(ValueError):
        ledger.reserve(0.01)


def test_failed_attempts_are_released_or_charged_by_what_may_have_been_billed() -> None:
    ledger = CreditLedger(cap=10.0)
    refunded = ledger.reserve(2.0)
    ledger.settle_failure(refunded, UpstreamError("503 upstream_error"))
    assert ledger.spent == 0.0
    cut = ledger.reserve(2.0)
    ledger.settle_failure(cut, TransportError("stream cut after billing began"))
    assert ledger.spent == 2.0


def test_an_overshoot_is_spent_counted_and_the_bound_no_longer_trusted() -> None:
    ledger = CreditLedger.for_job(100.0, "gemini-3.1-pro", output_bound=50)
    small = ledger.request_credits(9, PRICE)
    reservation = ledger.reserve(small)
    ledger.settle(reservation, small + 0.3)
    assert ledger.overshoots == 1 and ledger.overshoot_credits == pytest.approx(0.3)
    assert ledger.spent == pytest.approx(small + 0.3)
    assert ledger.output_bound == 65_536  # from now on the model's own limit
    assert ledger.request_credits(9, PRICE) > 60


def test_billed_credits_prefers_the_apis_figure() -> None:
    assert billed_credits(Completion(credits_consumed=0.25, prompt_tokens=194,
                                     completion_tokens=229), PRICE) == 0.25
    assert billed_credits(Completion(prompt_tokens=194, completion_tokens=229), PRICE) == (
        pytest.approx(0.25088))
    assert billed_credits(Completion(), PRICE) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0.0, 1.0), st.booleans()),
                min_size=1, max_size=60),
       st.floats(1.0, 50.0))
def test_spend_never_passes_the_cap_when_answers_stay_in_their_bound(
    requests: list[tuple[float, float, bool]], cap: float
) -> None:
    """Any interleaving: reserve while it fits, settle any cost up to the reservation."""
    ledger = CreditLedger(cap=cap)
    open_reservations = []
    for amount, share, settle_one in requests:
        if ledger.fits(amount):
            open_reservations.append((ledger.reserve(amount), share))
        if settle_one and open_reservations:
            reservation, cost_share = open_reservations.pop(0)
            ledger.settle(reservation, reservation.credits * cost_share)
        assert ledger.spent + ledger.reserved <= cap + 1e-9
    for reservation, cost_share in open_reservations:
        ledger.settle(reservation, reservation.credits * cost_share)
    assert ledger.spent <= cap + 1e-9


def test_the_gate_at_high_concurrency_waits_then_stops_at_the_cap() -> None:
    """200 concurrent workers with random costs and delays: the peak of spent + reserved never
    passes the cap, waiters proceed as room frees, and once even an idle run could not start
    the next request, every worker is refused (none hangs)."""
    cap = 40.0
    ledger = CreditLedger(cap=cap, output_bound=0)
    one_credit_per_token = Price(input_credits_per_m=1e6, output_credits_per_m=1e6)
    rng = random.Random(7)
    peak = 0.0
    refused = started = 0

    async def worker(prompt_bound: int, delay: float, share: float) -> None:
        nonlocal peak, refused, started
        try:
            reservation = await gate.reserve(prompt_bound)
        except BudgetExhausted:
            refused += 1
            gate.close()  # as the runner does: stop dispatch for everyone
            return
        if reservation is None:
            refused += 1
            return
        assert reservation.credits == pytest.approx(prompt_bound + ROUNDING_MARGIN)
        started += 1
        peak = max(peak, ledger.spent + ledger.reserved)
        await anyio.sleep(delay)
        gate.settle(reservation, Completion(credits_consumed=reservation.credits * share))

    async def main() -> None:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for _ in range(200):
                    group.start_soon(worker, rng.randint(1, 3), rng.uniform(0, 0.01),
                                     rng.uniform(0.2, 1.0))

    gate = BudgetGate(ledger, one_credit_per_token)
    anyio.run(main)
    assert peak <= cap + 1e-9 and ledger.spent <= cap + 1e-9
    assert started > cap / 3.0  # it did not stop early: waiters got the room that freed
    assert refused > 0 and started + refused == 200
    assert ledger.in_flight == 0 and ledger.reserved == 0.0


def test_a_waiting_request_is_priced_at_the_bound_in_force_when_it_starts() -> None:
    """An overshoot while a request waits raises what that request must reserve."""
    ledger = CreditLedger.for_job(70.0, "gemini-3.1-pro", output_bound=1000)
    gate = BudgetGate(ledger, PRICE)
    results: list[float] = []

    async def main() -> None:
        first = await gate.reserve(10)
        assert first is not None
        assert first.credits == pytest.approx(PRICE.credits(10, 1000) + ROUNDING_MARGIN)
        other = ledger.reserve(69.5 - first.credits)  # another request holds the rest

        async def waiter() -> None:
            reservation = await gate.reserve(10)
            assert reservation is not None
            results.append(reservation.credits)

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.sleep(0.01)
            assert not results  # no room yet: it waits
            # The first answer overruns its bound: the model's limit applies from now on.
            gate.settle(first, Completion(credits_consumed=first.credits + 1.0))
            await anyio.sleep(0.01)
            assert not results
            gate.settle_failure(other, UpstreamError("503 upstream_error"))  # refunded

    anyio.run(main)
    assert ledger.output_bound == 65_536
    assert results == [pytest.approx(PRICE.credits(10, 65_536) + ROUNDING_MARGIN)]
