"""What the runner asks of its rate limiter and of its spending cap, as protocols: on one machine
they are ``ratelimit.Limiter`` and ``cost.budget.BudgetGate``; on a cluster, leases from the
run's governor (``cluster.leases``), so the same runner keeps one global rate and one cap."""

from __future__ import annotations

from typing import Protocol

from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.core.result import Completion
from batchrun.cost.budget import Reservation


class RequestGate(Protocol):
    """Lets requests go at the rate kept to, and learns from what the server answers."""

    def acquire_now(self, tokens: int = 0) -> bool: ...

    async def acquire(self, tokens: int = 0) -> None: ...

    def answered(self, rate_limit: RateLimitInfo | None = None) -> None: ...

    def rate_limited(self, retry_after: float | None,
                     rate_limit: RateLimitInfo | None = None) -> bool: ...

    def settle_tokens(self, estimated: int, actual: int) -> None: ...

    def describe(self) -> str: ...


class CreditGate(Protocol):
    """Reserves a request's bound under the cap before it is sent, settles it with its cost.

    ``reserve`` returns None once the gate is closed (the run stops) and raises
    ``cost.budget.BudgetExhausted`` once the cap itself is reached."""

    async def reserve(self, prompt_bound: int) -> Reservation | None: ...

    def settle(self, reservation: Reservation, completion: Completion) -> None: ...

    def settle_failure(self, reservation: Reservation, error: BaseException) -> None: ...

    def close(self) -> None: ...
