"""What a run is given and what it reports back (data only): the plan decided before anything is
sent, the outcome once dispatch ended, why it stopped. Exit codes are the CLI's reading of it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.core.errors import BatchrunError
from batchrun.cost.budget import CreditLedger
from batchrun.dispatch.progress import RunCounters
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.store.cache import AnswerCache
from batchrun.store.index import JournalIndex
from batchrun.store.rundir import RunDir

# Why dispatch stopped before every row was sent (``RunOutcome.stop_reason``).
STOP_FATAL = "fatal"
STOP_BUDGET = "budget"
STOP_INTERRUPT = "interrupt"

# An ok row whose answer carried no usage: flagged with this code (error_type "warning").
MISSING_USAGE = "missing_usage"
MISSING_USAGE_MESSAGE = ("the answer carried no usage: its tokens and cost are unknown "
                         "(the gateway billed it)")

# Shows the counters while the run lasts; cancelled when dispatch ends (the caller's display).
Progress = Callable[[RunCounters], Coroutine[Any, Any, None]]
# Tells a person at once of something that changed the run (an interrupt), as it happens.
Notice = Callable[[str], None]


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, decided before anything is sent."""

    manifest: Path
    run_dir: RunDir
    job: JobSpec
    endpoint: str
    api_key: str
    rows_total: int
    index: JournalIndex
    retry_failed: bool = False
    media_root: Path | None = None
    progress: Progress | None = None  # None: nothing shows progress
    notice: Notice | None = None  # None: interrupts are handled without a word
    # Send just these rows instead of streaming the manifest (a calibration sample).
    only_rows: tuple[Row, ...] | None = None
    # The spending cap's ledger (--max-credits); shared by a calibration sample and the run.
    budget: CreditLedger | None = None
    reuse: AnswerCache | None = None  # --reuse: answers of an earlier run, by request
    # What the cache keys name the endpoint by, when not its URL (store.keys.EMULATOR_ENDPOINT).
    key_endpoint: str | None = None
    estimate_credits: float | None = None


@dataclass
class RunOutcome:
    """What dispatch did: its counters, why it stopped early (None: it did not), and how many
    rows it left unsent."""

    counters: RunCounters
    stop_reason: str | None = None
    stop_error: BatchrunError | None = None
    rows_pending: int = 0
    # What the engine says of itself (a cluster run: workers, lost workers, lease calls).
    engine: dict[str, Any] | None = None
