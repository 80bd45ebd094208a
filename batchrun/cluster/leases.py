"""A dispatch worker's side of the governor: the runner's rate limiter and spending cap
(``dispatch.gates``) served from leases instead of local buckets.

``GovernorLink`` batches what the worker tells the governor (answers, 429s, tokens, credits
spent) into the calls it makes anyway for permits or allowance, plus one when news waited a
whole ``LEASE_S`` without one (``report_loop``). Permits fall due at the rate granted and
lapse ``PERMIT_TTL_S`` after the last is due, so a worker never saves up a burst above the
global rate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from batchrun.cluster.messages import LEASE_S, LeaseAsk, LeaseGrant
from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.core.result import Completion
from batchrun.cost.budget import BudgetExhausted, BudgetGate, CreditLedger, Reservation
from batchrun.cost.catalog import Price

PERMIT_TTL_S = 1.0
# Allowance asked for at once: this many reservations of the size the worker needs now.
CREDIT_CHUNK = 4
# Between calls that found no room under the cap (others hold it for requests in flight).
ROOM_POLL_S = 0.05
MAX_ROOM_POLL_S = 0.5

Call = Callable[[LeaseAsk], Awaitable[LeaseGrant]]


class GovernorLink:
    """One worker's calls on the governor, and the news waiting to go with the next one."""

    def __init__(self, worker: str, call: Call,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self._call = call
        self._clock = clock
        self.news = LeaseAsk(worker)
        self.permits = 0
        self.next_permit_at = 0.0  # permits fall due one by one, at the rate granted
        self.pace_s = 0.0
        self.permits_until = 0.0
        self.free_until = 0.0
        self.rate_text = "leased from the run's governor"
        self.calls = 0
        self.asked_at = 0.0

    def take_permit(self) -> bool:
        now = self._clock()
        if now < self.free_until:
            self.news.sent_freely += 1
            return True
        if self.permits and now < self.permits_until:
            if now < self.next_permit_at:
                return False  # the next one is not due yet (``permit_due_in``)
            self.permits -= 1
            self.next_permit_at += self.pace_s
            return True
        self.permits = 0  # lapsed
        return False

    def permit_due_in(self) -> float | None:
        """Seconds until the next permit in hand falls due; None when none is in hand."""
        now = self._clock()
        if not self.permits or now >= self.permits_until:
            return None
        return max(0.0, self.next_permit_at - now)

    async def ask(self, *, requests: int = 0, tokens_each: int = 0, credits: float = 0.0,
                  credits_floor: float = 0.0) -> LeaseGrant:
        """One call: what is wanted now, with the news since the last call."""
        ask, self.news = self.news, LeaseAsk(self.worker)
        ask.requests, ask.tokens_each = requests, tokens_each
        ask.credits, ask.credits_floor = credits, credits_floor
        self.calls += 1
        self.asked_at = self._clock()
        grant = await self._call(ask)
        now = self._clock()
        if grant.requests:
            if not self.permits:
                self.next_permit_at = now
            self.permits += grant.requests
            self.pace_s = grant.pace_s
            self.permits_until = now + self.permits * grant.pace_s + PERMIT_TTL_S
        if grant.free_for_s:
            self.free_until = now + grant.free_for_s
        if grant.rate_text:
            self.rate_text = grant.rate_text
        return grant

    async def report_loop(self) -> None:
        """Send the news when it waited a whole ``LEASE_S`` without a call for permits (a
        worker done sending, or between windows, still owes its answers and spending)."""
        while True:
            await anyio.sleep(LEASE_S)
            # News goes with the calls for permits; this call only when none went for a lease.
            if self.news.has_news and self._clock() - self.asked_at >= LEASE_S:
                await self.ask()


class LeasedLimiter:
    """``dispatch.gates.RequestGate`` from the governor's permits."""

    def __init__(self, link: GovernorLink, ask_for: int = 1) -> None:
        self.link = link
        # Permits asked for at once: at least this many (a worker's demand over a lease, not
        # just the rows waiting this instant), so a call brings a lease's worth.
        self.ask_for = ask_for
        self._lock = anyio.Lock()
        self._waiting = 0

    def acquire_now(self, tokens: int = 0) -> bool:
        return self.link.take_permit()

    async def acquire(self, tokens: int = 0) -> None:
        link = self.link
        self._waiting += 1
        try:
            # Waiters leave one by one in arrival order (as from the local limiter); the one
            # in front waits for the next permit to fall due, or asks for every waiter.
            async with self._lock:
                while not link.take_permit():
                    due = link.permit_due_in()
                    if due is not None:
                        await anyio.sleep(due)
                        continue
                    grant = await link.ask(requests=max(self._waiting, self.ask_for),
                                           tokens_each=tokens)
                    if not (grant.requests or grant.free_for_s):
                        await anyio.sleep(min(max(grant.wait_s, 0.001), LEASE_S))
        finally:
            self._waiting -= 1

    def answered(self, rate_limit: RateLimitInfo | None = None) -> None:
        self.link.news.answered += 1
        if rate_limit is not None:
            self.link.news.rate_info = rate_limit

    def rate_limited(self, retry_after: float | None,
                     rate_limit: RateLimitInfo | None = None) -> bool:
        # Whether it was overload is the governor's call; the row's own retry waits anyway.
        self.link.news.refusals.append((retry_after, rate_limit))
        return False

    def settle_tokens(self, estimated: int, actual: int) -> None:
        if actual >= 0:
            self.link.news.token_correction += actual - estimated

    def describe(self) -> str:
        return self.link.rate_text


class LeasedBudget(BudgetGate):
    """``cost.budget.BudgetGate`` over allowance the governor grants under the cap.

    The local ledger's cap is the allowance in hand: requests reserve from it as on one
    machine; what is spent goes to the governor with the next call, and allowance beyond a
    few reservations is handed back so other workers can use it."""

    def __init__(self, template: CreditLedger, price: Price, link: GovernorLink) -> None:
        super().__init__(CreditLedger(
            cap=0.0, output_bound=template.output_bound,
            output_bound_source=template.output_bound_source,
            model_output_limit=template.model_output_limit), price)
        self.link = link
        self._asking = anyio.Lock()
        self._poll_s = ROOM_POLL_S

    async def _wait_for_room(self, credits: float) -> None:
        ledger = self.ledger
        async with self._asking:  # one call at a time; the others find the room it brought
            if ledger.fits(credits) or self._closed:
                return
            # Every spare credit goes back first: a worker waiting for room holds only what
            # its requests in flight reserved, so two waiting workers never each hold part
            # of what the other needs.
            self._hand_back(keep=0.0)
            grant = await self.link.ask(credits=credits * CREDIT_CHUNK, credits_floor=credits)
            ledger.cap += grant.credits
            if grant.exhausted:
                ledger.refused = credits
                raise BudgetExhausted
            if grant.credits:
                self._poll_s = ROOM_POLL_S
            else:
                # Room comes back as other workers' requests settle: ask less and less often.
                await anyio.sleep(self._poll_s)
                self._poll_s = min(2 * self._poll_s, MAX_ROOM_POLL_S)

    def settle(self, reservation: Reservation, completion: Completion) -> None:
        self._spend(lambda: super(LeasedBudget, self).settle(reservation, completion))

    def settle_failure(self, reservation: Reservation, error: BaseException) -> None:
        self._spend(lambda: super(LeasedBudget, self).settle_failure(reservation, error))

    def close(self) -> None:
        super().close()
        self._hand_back(keep=0.0)

    def _spend(self, settle: Callable[[], None]) -> None:
        before = self.ledger.spent
        settle()
        self.link.news.spent += self.ledger.spent - before
        self._hand_back(keep=self.ledger.largest_reservation * CREDIT_CHUNK)

    def _hand_back(self, keep: float) -> None:
        ledger = self.ledger
        spare = ledger.cap - ledger.committed - keep
        if spare > 0:
            ledger.cap -= spare
            self.link.news.returned += spare
