"""What the driver, the governor and the dispatch workers tell each other (plain, picklable
data; nothing here knows Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchrun.core.errors import BatchrunError
from batchrun.core.ratelimit_info import RateLimitInfo
from batchrun.core.result import RowResult
from batchrun.cost.budget import CreditLedger
from batchrun.manifest.job import JobSpec

# A lease covers this much of the rate: a worker asks about four times a second while it sends.
LEASE_S = 0.25

# What an outbox entry is: a row's last line (done) or a paid try asked again (not done).
KIND_ROW = "row"
KIND_TRY = "try"


@dataclass
class LeaseAsk:
    """A worker's call on the governor: what it wants now and what happened since its last
    call (answers, refusals, spending), batched."""

    worker: str
    requests: int = 0  # permits wanted now
    tokens_each: int = 0  # the estimated tokens of each (the tokens/min bucket)
    credits: float = 0.0  # allowance under the cap wanted now
    credits_floor: float = 0.0  # the least allowance that lets one more request go
    answered: int = 0
    sent_freely: int = 0  # requests sent in a window without limit (``LeaseGrant.free_for_s``)
    rate_info: RateLimitInfo | None = None  # the newest rate-limit headers of an answer
    refusals: list[tuple[float | None, RateLimitInfo | None]] = field(default_factory=list)
    token_correction: int = 0  # real tokens minus estimated, summed
    spent: float = 0.0  # credits spent since the last call
    returned: float = 0.0  # allowance handed back

    @property
    def has_news(self) -> bool:
        return bool(self.answered or self.sent_freely or self.refusals
                    or self.token_correction or self.spent or self.returned
                    or self.rate_info is not None)


@dataclass(frozen=True)
class LeaseGrant:
    """The governor's answer: permits to send (or a window with no limit to keep), allowance,
    and the rate as a person should read it."""

    requests: int = 0
    pace_s: float = 0.0  # the permits fall due one every ``pace_s`` from the grant on
    free_for_s: float = 0.0  # no rate to keep: send freely this long, then ask again
    wait_s: float = 0.0  # nothing granted: ask again after this long
    credits: float = 0.0
    exhausted: bool = False  # the cap is reached: not even one more request fits
    rate_text: str = ""


@dataclass(frozen=True)
class Shard:
    """Manifest lines ``first`` to ``last`` (inclusive, 1-based) less ``skip``, the lines done
    already (earlier sessions, or answered before a worker was lost)."""

    number: int
    first: int
    last: int
    skip: frozenset[int] = frozenset()


@dataclass(frozen=True)
class WorkerSpec:
    """What a dispatch worker needs to build the local engine's runner for itself. The API key
    is not here: it goes with ``start``, a call, so Ray never keeps it with the actor's
    definition (which it stores to restart actors)."""

    name: str
    manifest: Path
    job: JobSpec
    endpoint: str
    media_root: Path | None
    key_endpoint: str | None
    ledger: CreditLedger | None  # the run's cap: its bounds, not its room (the governor's)
    reuse: Path | None = None  # --reuse: the earlier run directory, read at the same path


@dataclass
class WorkerReport:
    """What a worker sends the driver when asked: finished rows and tries in the order they
    ended, shards it is done with, its counters, and why it stopped (if it did)."""

    results: list[tuple[str, RowResult]] = field(default_factory=list)
    shards_done: list[tuple[int, bool]] = field(default_factory=list)  # (number, reached EOF)
    in_flight: int = 0
    waiting: int = 0
    requests_sent: int = 0
    rate_text: str = ""
    stop_reason: str | None = None
    stop_error: BatchrunError | None = None
    budget_refused: float | None = None
    finished: bool = False  # its runner ended: nothing more will come
