"""A spending cap that holds at any concurrency: reserve an upper bound before each request,
settle it with the real cost when the answer comes.

The gateway's API (https://api.aivideoapi.ai) has no max-tokens field, so nothing the client
sends limits an answer's length.
The bound on one request is therefore built from limits that exist whatever the model does:

- prompt: the UTF-8 bytes of every text part (a byte-fallback tokenizer never spends more than
  one token per byte), plus the per-message overhead, plus Gemini's per-item rule for each
  media part times ``MEDIA_MARGIN`` (exact only when pages or seconds are known);
- output: the model's own output-token limit (65,536 for gemini-3.1-pro), or the job's
  ``max_output_tokens_bound`` when the user knows better (a promise batchrun checks: see below);
- ``ROUNDING_MARGIN`` credits, since the gateway may round ``credits_consumed`` up.

``CreditLedger`` is the arithmetic (pure): a request may start only while ``spent + reserved +
its bound <= cap``. When every answer costs at most its reservation, spend can never pass the
cap, however many requests are in flight. An answer that costs more than its reservation (an
overshoot: a too-tight ``max_output_tokens_bound``, or media longer than its rule) is settled
at its real cost and counted; the ledger then stops trusting the job's bound and reserves the
model's limit from then on, and since the overshoot is in ``spent``, dispatch stops as soon as
the next reservation would not fit. Only answers already in flight at that moment can add to
it: that, and nothing else, is how a wrong bound you set can pass the cap.

Answers whose cost is unknown (a stream cut after billing began, an answer without usage) are
charged their whole reservation: the ledger errs towards spending less than allowed, never more.
``BudgetGate`` is the async wrapper the workers share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from batchrun.core.errors import BatchrunError, TransportError
from batchrun.core.result import Completion
from batchrun.cost.catalog import GEMINI_3_RULES, MediaRules, Price, model_facts
from batchrun.cost.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    PART_MESSAGE,
    PART_TEXT,
    media_part_tokens,
    message_parts,
)
from batchrun.media.meta import MediaMeta

MEDIA_MARGIN = 2.0
# Credits: the API reference's example answer bills 0.25 where the formula gives 0.2509.
ROUNDING_MARGIN = 0.01
_EPSILON = 1e-9  # float sums of many small costs must not refuse the reservation that fits
# A suggested cap leaves this much more than the reservations it is sized for: a longer prompt
# than the one measured reserves a little more.
CAP_HEADROOM = 1.05


def prompt_token_bound(
    messages: Iterable[Any],
    metas: Mapping[str, MediaMeta] | None = None,
    rules: MediaRules = GEMINI_3_RULES,
) -> int:
    """An upper bound on the prompt tokens of chat messages (see the module docstring).

    ``metas`` maps an image_url (a local file's placeholder) to the metadata read from the
    file; its pages, seconds or pixels make the media part's count exact before the margin.
    """
    tokens = 0
    for part_type, value in message_parts(messages):
        if part_type == PART_MESSAGE:
            tokens += MESSAGE_OVERHEAD_TOKENS
        elif part_type == PART_TEXT:
            tokens += len(value.encode("utf-8"))
        else:
            tokens += round(media_part_tokens(value, metas, rules)[1] * MEDIA_MARGIN)
    return tokens


@dataclass(frozen=True)
class Reservation:
    credits: float


@dataclass
class CreditLedger:
    """Credits spent, reserved and allowed for one run directory (pure arithmetic).

    ``spent`` starts at what the run directory already paid, so the cap covers the whole run
    across resumes, calibration sample included.
    """

    cap: float
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    output_bound: int = 0  # output tokens reserved per request
    output_bound_source: str = ""
    model_output_limit: int = 0
    overshoots: int = 0
    overshoot_credits: float = 0.0
    refused: float | None = None  # the reservation that no longer fitted: why we stopped
    largest_reservation: float = 0.0
    unknown_costs: int = 0  # answers of unknown cost, spent at their whole reservation
    unknown_credits: float = 0.0

    @classmethod
    def for_job(
        cls, cap: float, model: str, *, spent: float = 0.0, output_bound: int | None = None
    ) -> CreditLedger:
        limit = model_facts(model).output_token_limit
        if output_bound is not None and output_bound < limit:
            bound, source = output_bound, "the job's max_output_tokens_bound"
        else:
            bound, source = limit, f"{model}'s output limit"
        return cls(cap=cap, spent=spent, output_bound=bound, output_bound_source=source,
                   model_output_limit=limit)

    def request_credits(self, prompt_bound: int, price: Price) -> float:
        """What one request reserves now: its prompt bound and the output bound, priced."""
        return price.credits(prompt_bound, self.output_bound) + ROUNDING_MARGIN

    @property
    def committed(self) -> float:
        return self.spent + self.reserved

    def fits(self, credits: float) -> bool:
        """True if a request reserving ``credits`` may start now."""
        return self.committed + credits <= self.cap + _EPSILON

    def can_ever_fit(self, credits: float) -> bool:
        """False once even an idle run could not start it: the cap is reached."""
        return self.spent + credits <= self.cap + _EPSILON

    def reserve(self, credits: float) -> Reservation:
        if not self.fits(credits):
            raise ValueError(f"{credits} credits do not fit under the cap")
        self.reserved += credits
        self.in_flight += 1
        self.largest_reservation = max(self.largest_reservation, credits)
        return Reservation(credits)

    def settle(self, reservation: Reservation, credits: float | None) -> None:
        """The answer came: spend its real cost (or the whole reservation when unknown)."""
        self._close(reservation)
        actual = reservation.credits if credits is None else max(0.0, credits)
        self.spent += actual
        if credits is None:
            self.unknown_costs += 1
            self.unknown_credits += actual
        if actual > reservation.credits + _EPSILON:
            self.overshoots += 1
            self.overshoot_credits += actual - reservation.credits
            # A bound that was wrong once is not trusted again.
            if self.output_bound < self.model_output_limit:
                self.output_bound = self.model_output_limit
                self.output_bound_source = (
                    "the model's output limit (an answer overran the job's bound)"
                )

    def release(self, reservation: Reservation) -> None:
        """Nothing was billed (an error answer: the gateway refunds upstream failures)."""
        self._close(reservation)

    def _close(self, reservation: Reservation) -> None:
        self.reserved = max(0.0, self.reserved - reservation.credits)
        self.in_flight -= 1
        if self.in_flight == 0:
            self.reserved = 0.0  # no float residue once nothing is out

    def settle_failure(self, reservation: Reservation, error: BaseException) -> None:
        """A failed attempt: API error answers are not billed; a broken transfer may be."""
        if isinstance(error, BatchrunError) and not isinstance(error, TransportError):
            self.release(reservation)
        else:
            self.settle(reservation, None)

    @property
    def room(self) -> float:
        return max(0.0, self.cap - self.spent)


def billed_credits(completion: Completion, price: Price) -> float | None:
    """What an answer cost: the API's ``credits_consumed``, else the formula, else unknown."""
    if completion.credits_consumed is not None:
        return completion.credits_consumed
    if completion.has_usage:
        return price.credits(completion.prompt_tokens or 0, completion.completion_tokens or 0)
    return None


class BudgetExhausted(Exception):
    """The next request's reservation does not fit under the cap."""


class BudgetGate:
    """The ledger shared by the workers of one run: ``reserve`` waits while requests in flight
    hold the room it needs, and raises ``BudgetExhausted`` once the cap itself is reached."""

    def __init__(self, ledger: CreditLedger, price: Price) -> None:
        self.ledger = ledger
        self.price = price
        self._changed = anyio.Event()
        self._closed = False

    async def reserve(self, prompt_bound: int) -> Reservation | None:
        """A reservation for a request whose prompt is at most ``prompt_bound`` tokens, or None
        when the gate was closed (the run is stopping)."""
        ledger = self.ledger
        while True:
            if self._closed:
                return None
            # Priced on every try: an overshoot elsewhere may have raised the output bound.
            credits = ledger.request_credits(prompt_bound, self.price)
            if ledger.fits(credits):
                return ledger.reserve(credits)
            await self._wait_for_room(credits)

    async def _wait_for_room(self, credits: float) -> None:
        """Until a settlement may have freed room for ``credits``; ``BudgetExhausted`` once the
        cap itself leaves none (a cluster's workers ask their governor instead)."""
        if not self.ledger.can_ever_fit(credits):
            self.ledger.refused = credits
            raise BudgetExhausted
        # Requests in flight hold the room; each settlement may free enough of it.
        await self._changed.wait()

    def settle(self, reservation: Reservation, completion: Completion) -> None:
        self.ledger.settle(reservation, billed_credits(completion, self.price))
        self._notify()

    def settle_failure(self, reservation: Reservation, error: BaseException) -> None:
        self.ledger.settle_failure(reservation, error)
        self._notify()

    def close(self) -> None:
        """Wake every waiter with None: no more dispatch."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


def least_reservation(ledger: CreditLedger, price: Price) -> float:
    """What a request with an empty prompt reserves: the floor of every reservation."""
    return price.credits(0, ledger.output_bound) + ROUNDING_MARGIN


def in_flight_under_cap(ledger: CreditLedger, per_request: float, concurrency: int) -> int:
    """How many requests reserving ``per_request`` each the cap's room holds at once."""
    if per_request <= 0:
        return concurrency
    return min(concurrency, int((ledger.room + _EPSILON) // per_request))


def budget_lines(
    ledger: CreditLedger, price: Price, *, expected: float, concurrency: int
) -> list[str]:
    """How the cap will work on this run, before anything is sent (stderr). What it does to
    concurrency is ``cap_advice.cap_warnings``' to say."""
    per_request = least_reservation(ledger, price)
    lines = [
        f"budget: cap {ledger.cap:,.4f} credits, {ledger.spent:,.4f} already spent by this run; "
        f"each request reserves its prompt bound + {ledger.output_bound:,} output tokens "
        f"({ledger.output_bound_source}), at least {per_request:,.4f} credits",
    ]
    if in_flight_under_cap(ledger, per_request, concurrency) == 0:
        return lines  # nothing can start: no share of the rows to speak of
    if expected > ledger.room:
        share = ledger.room / expected if expected > 0 else 0.0
        lines.append(
            f"  the estimate ({expected:,.4f}) is above what the cap leaves "
            f"({ledger.room:,.4f}): the run will stop at the cap after about {share:.0%} of "
            "the rows (exit 4)"
        )
    return lines


def cap_reached_lines(ledger: CreditLedger, *, rows_pending: int, credits_per_row: float,
                      resume_command: str) -> list[str]:
    """Why the run stopped at the cap, and how to go on with a higher one (stderr)."""
    refused = ledger.refused if ledger.refused is not None else ledger.largest_reservation
    lines = [
        f"stopped at the budget cap: {ledger.spent:,.4f} of {ledger.cap:,.4f} credits spent; "
        f"the next request would have reserved up to {refused:,.4f} credits",
    ]
    if ledger.unknown_costs:
        # Counted at their bound, so the cap holds; the run's own total counts them as 0.
        lines.append(
            f"  of which {ledger.unknown_credits:,.4f} credits are {ledger.unknown_costs:,} "
            "answers of unknown cost (cut off, or without usage), each counted at the most it "
            "could have cost; if the server sends usage only when asked, set "
            "stream_usage = \"ask\" in the job"
        )
    if ledger.overshoots:
        lines.append(
            f"  {ledger.overshoots} answers cost more than their reservation "
            f"(+{ledger.overshoot_credits:,.4f} credits): max_output_tokens_bound was too low"
        )
    if rows_pending and credits_per_row > 0:
        lines.append(
            f"  {rows_pending:,} rows left, about {rows_pending * credits_per_row:,.4f} credits "
            "at the cost per row so far"
        )
    elif rows_pending:  # "about 0 credits" would read as free
        lines.append(f"  {rows_pending:,} rows left; none answered yet to tell their cost")
    lines.append(f"to go on, raise the cap and resume:\n  {resume_command}")
    return lines


def suggested_cap(ledger: CreditLedger, *, rows_pending: int, credits_per_row: float,
                  concurrency: int = 1) -> float:
    """A cap that should let the rest finish: spend so far, the rest at the rate so far +10%,
    and room for ``concurrency`` reservations (or one a row left, when fewer) of the largest
    size met, so the rest runs as wide as configured to its end. It always holds the request
    that did not fit (a cap sized without it would be suggested again, forever)."""
    per_request = max(ledger.refused or 0.0, ledger.largest_reservation)
    in_flight = max(1, min(concurrency, rows_pending))
    needed = (ledger.spent + rows_pending * credits_per_row * 1.1
              + per_request * CAP_HEADROOM * in_flight)
    return float(math.ceil(max(needed, ledger.cap * 1.1)))
