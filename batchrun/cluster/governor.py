"""The run's governor: one global rate, one spending cap, one shared pause for every worker.

``Governor`` is pure given the clock it is handed: the same ``dispatch.ratelimit.Limiter``
(and through it the same ``RateController``, background 429s and all) that a run on one
machine keeps, fed with the answers and refusals the workers report in batches. Workers lease
in chunks (``messages.LEASE_S`` of the rate per call, never one request per call): permits for
requests, allowance under ``--max-credits``. ``GovernorService`` is the async shell the Ray
actor wraps: a worker's call for permits waits there, in arrival order, until some are due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from batchrun.cluster.messages import LEASE_S, LeaseAsk, LeaseGrant
from batchrun.dispatch.ratelimit import Limiter

# Cap arithmetic slack (credits are floats summed in different orders on different workers).
_EPSILON = 1e-9
# The longest a call for permits waits in the governor before the worker asks again (it
# re-checks its own stop between calls).
MAX_WAIT_S = 1.0


class Governor:
    """Rate and cap of a cluster run (pure: the clock is handed in)."""

    def __init__(self, rpm: float | None, tpm: float | None, *, cap: float | None = None,
                 spent: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = Limiter(rpm=rpm, tpm=tpm, clock=clock)
        self.cap = cap
        self.spent = spent  # credits paid, run directory's earlier sessions included
        self.held: dict[str, float] = {}  # allowance out with each worker
        self.refused: float | None = None  # the reservation that no longer fitted
        self.asks = 0  # calls served (the bench's measure of its capacity)

    # --- what happened on the workers ---------------------------------------------------
    def learn(self, ask: LeaseAsk) -> None:
        """Take a worker's batched news: answers and 429s teach the rate controller exactly
        as on one machine; spending and returned allowance move the cap's ledger."""
        self.asks += 1
        limiter = self.limiter
        if ask.sent_freely:
            limiter.sent_elsewhere(ask.sent_freely)
        for _ in range(ask.answered - 1):
            limiter.answered(None)
        if ask.answered:
            limiter.answered(ask.rate_info)  # the newest headers, once
        for retry_after, info in ask.refusals:
            limiter.rate_limited(retry_after, info)
        if ask.token_correction:
            limiter.settle_tokens(0, ask.token_correction)
        if ask.spent or ask.returned:
            self.spent += ask.spent
            held = self.held.get(ask.worker, 0.0) - ask.spent - ask.returned
            self.held[ask.worker] = max(0.0, held)

    def forget(self, worker: str) -> None:
        """A worker was lost: what it held counts as spent (its answers in flight may have been
        billed), so the cap is never passed because of it."""
        self.spent += self.held.pop(worker, 0.0)

    # --- leases -------------------------------------------------------------------------
    def permits(self, ask: LeaseAsk, now: float) -> LeaseGrant:
        """Permits for up to ``ask.requests`` requests now (at most a lease's worth of the
        rate), a window without limit when there is no rate to keep, or how long to wait."""
        limiter = self.limiter
        text = limiter.describe()
        if ask.requests <= 0:
            return LeaseGrant(rate_text=text)
        if limiter.requests is None and limiter.tokens is None:
            if now >= limiter.paused_until:
                return LeaseGrant(free_for_s=LEASE_S, rate_text=text)
            return LeaseGrant(wait_s=limiter.paused_until - now, rate_text=text)
        delay = limiter.take_or_wait(ask.tokens_each, now)
        if delay > 0:
            return LeaseGrant(wait_s=delay, rate_text=text)
        per_s = limiter.requests_per_s(ask.tokens_each)
        chunk = max(1, min(ask.requests, int(per_s * LEASE_S)))
        granted = 1
        # The rest of the chunk falls due over the next lease: taken from the buckets now and
        # sent by the worker one every 1/rate — one call for a lease's worth, the global rate
        # kept as one bucket keeps it.
        while granted < chunk and limiter.take_ahead(ask.tokens_each, now, LEASE_S):
            granted += 1
        return LeaseGrant(requests=granted, pace_s=1.0 / per_s if per_s else 0.0,
                          rate_text=text)

    def allowance(self, ask: LeaseAsk) -> tuple[float, bool]:
        """(credits granted, cap reached): up to ``ask.credits`` of the room left, nothing when
        less than ``credits_floor`` is left, and "reached" once not even an idle cluster could
        fit one more request."""
        if self.cap is None or ask.credits <= 0:
            return 0.0, False
        room = self.cap - self.spent - sum(self.held.values())
        if room + _EPSILON >= ask.credits_floor:
            granted = max(0.0, min(ask.credits, room))
            self.held[ask.worker] = self.held.get(ask.worker, 0.0) + granted
            return granted, False
        # As on one machine (``CreditLedger.can_ever_fit``): reached once what is spent leaves
        # no room for it; allowance held for requests in flight may still come back.
        if self.spent + ask.credits_floor > self.cap + _EPSILON:
            self.refused = ask.credits_floor
            return 0.0, True
        return 0.0, False  # others hold the room for requests in flight: ask again soon

    def summary(self) -> dict[str, float | int | None]:
        return {"spent": self.spent, "held": sum(self.held.values()), "refused": self.refused,
                "asks": self.asks, "refusals": self.limiter.refusals,
                "rate_rpm": self.limiter.rate_rpm}


class GovernorService:
    """The governor as the actor serves it: calls for permits wait here in arrival order."""

    def __init__(self, rpm: float | None, tpm: float | None, cap: float | None,
                 spent: float) -> None:
        self.governor = Governor(rpm, tpm, cap=cap, spent=spent)
        self._queue = asyncio.Lock()

    async def lease(self, ask: LeaseAsk) -> LeaseGrant:
        governor = self.governor
        governor.learn(ask)
        credits, exhausted = governor.allowance(ask)
        if ask.requests <= 0:
            return LeaseGrant(credits=credits, exhausted=exhausted,
                              rate_text=governor.limiter.describe())
        waited = 0.0
        async with self._queue:
            while True:
                grant = governor.permits(ask, time.monotonic())
                if grant.requests or grant.free_for_s or waited >= MAX_WAIT_S:
                    break
                pause = min(max(grant.wait_s, 0.001), MAX_WAIT_S - waited)
                await asyncio.sleep(pause)
                waited += pause
        return LeaseGrant(requests=grant.requests, free_for_s=grant.free_for_s,
                          wait_s=grant.wait_s, credits=credits, exhausted=exhausted,
                          rate_text=grant.rate_text)

    def forget(self, worker: str) -> None:
        self.governor.forget(worker)

    def summary(self) -> dict[str, float | int | None]:
        return self.governor.summary()
