"""Finished rows into the journal: the row's result (an answer, an error, an earlier run's answer
for ``--reuse``), its journal line, and the run's counters once that line is in the kernel.

The circuit breaker watches every recorded row; a trip, or a journal that cannot be written,
stops the run through the ``stop`` the runner gives (dispatch ends, nothing recorded is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson

from batchrun.api.client import mask_key
from batchrun.core.errors import BatchrunError, FatalError, RetryableError, StorageError
from batchrun.core.result import STATUS_ERROR, STATUS_OK, Completion, RowResult, row_credits
from batchrun.cost.catalog import Price
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.dispatch.plan import MISSING_USAGE, MISSING_USAGE_MESSAGE, STOP_FATAL
from batchrun.dispatch.progress import RunCounters
from batchrun.dispatch.structured import count_try
from batchrun.manifest.rows import Row
from batchrun.store.cache import AnswerCache
from batchrun.store.journal import JournalWriteError
from batchrun.store.keys import cache_key
from batchrun.store.rundir import RunDir

Stop = Callable[[str, BatchrunError | None], None]


class Recorder:
    """Journals the rows of one run and counts them (``counters``) once they are kept."""

    def __init__(self, run_dir: RunDir, *, endpoint: str, api_key: str, price: Price,
                 counters: RunCounters, breaker: CircuitBreaker, stop: Stop) -> None:
        self.run_dir = run_dir
        self.endpoint = endpoint
        self.api_key = api_key
        self.price = price
        self.counters = counters
        self.breaker = breaker
        self.stop = stop
        self._unflushed: list[RowResult] = []  # journaled, waiting for ``flush``

    # --- a row's result --------------------------------------------------------------
    def ok(self, row: Row, completion: Completion, *, attempts: int, started_at: float,
           request_sha: str, latency_ms: float, failed_attempts: list[str] | None = None,
           price: Price | None = None) -> RowResult:
        """An answer's result, not recorded yet (``record``, or ``record_try`` for a try asked
        again); ``started_at`` is when its first attempt was sent. ``price``: of the row's own
        model, when it names one (else the job's)."""
        price = price or self.price
        credits_computed = None
        if completion.has_usage:
            credits_computed = price.credits(
                completion.prompt_tokens or 0, completion.completion_tokens or 0
            )
        credits = completion.credits_consumed
        billed = row_credits(credits, credits_computed)  # a reported 0.0 stays 0.0
        # Paid for but of unknown cost: an ok row, flagged, never silently zero.
        warning = None if completion.has_usage else MISSING_USAGE_MESSAGE
        return RowResult(
            id=row.id,
            status=STATUS_OK,
            content=completion.content,
            thoughts=completion.thoughts or None,
            finish_reason=completion.finish_reason,
            model=completion.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            reasoning_tokens=completion.reasoning_tokens,
            total_tokens=completion.total_tokens,
            credits=credits,
            credits_computed=credits_computed,
            cost_usd=price.usd(billed) if billed is not None else None,
            http_status=completion.http_status,
            attempts=attempts,
            latency_ms=latency_ms,
            started_at=started_at,
            finished_at=time.time(),
            request_sha256=request_sha,
            response_id=completion.response_id,
            extra=orjson.dumps(completion.extra).decode() if completion.extra else None,
            error_code=MISSING_USAGE if warning else None,
            error_type="warning" if warning else None,
            error_message=warning,
            failed_attempts=failed_attempts,
        )

    def error(self, row: Row, error: BatchrunError, *, attempts: int, started_at: float,
              request_sha: str | None, failed_attempts: list[str] | None = None) -> None:
        """Record a row error. Retries exhausted and fatal answers are the run's trouble, not
        the row's: a resume sends the row again. A fatal answer stops the run."""
        self.record(row, RowResult(
            id=row.id,
            status=STATUS_ERROR,
            http_status=error.http_status,
            error_code=error.code,
            error_type=error.error_type,
            error_message=mask_key(error.message, self.api_key),
            attempts=attempts,
            started_at=started_at,
            finished_at=time.time(),
            request_sha256=request_sha,
            retryable=isinstance(error, FatalError | RetryableError),
            failed_attempts=failed_attempts,
        ))
        if isinstance(error, FatalError):
            self.stop(STOP_FATAL, error)

    def reused(self, row: Row, cache: AnswerCache, request_sha: str) -> bool:
        """Answer the row from --reuse when its request was answered there; True if so."""
        key = cache_key(self.endpoint, request_sha)
        record = cache.lookup(key)
        if record is None:
            return False
        self.record(row, cache.reused_result(record, row_id=row.id, key=key,
                                             request_sha=request_sha, now=time.time()))
        return True

    # --- the journal -----------------------------------------------------------------
    def record(self, row: Row, result: RowResult) -> None:
        """Journal the row; it counts as done once its line is in the kernel.

        Lines of every row finished in one turn of the event loop go to the kernel together
        (``flush``, scheduled by the first of them): one write syscall instead of one per row.
        A kill in between loses them as it loses answers not yet read.
        """
        result.line = row.line
        self.keep(result)

    def keep(self, result: RowResult) -> None:
        """``record`` of a result that already names its line (answered elsewhere: by a worker
        of a cluster run, ``cluster.driver``)."""
        result = self.breaker.after_trip(result)
        try:
            # Its cache key is made with its line, with the other rows of the loop's turn.
            self.run_dir.append(result, flush=False, keyed_by=self.endpoint)
        except StorageError as error:
            self._unflushed.append(result)
            self.flush(error)
            return
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self.flush)
        self._unflushed.append(result)
        trip = self.breaker.observe(result)
        if trip is not None:
            # Rows that failed only because the run is broken are sent again on resume.
            for reopened in trip.reopen:
                with contextlib.suppress(StorageError):
                    self.run_dir.append(reopened, keyed_by=self.endpoint)
            self.stop(STOP_FATAL, trip.error)

    def record_try(self, row: Row, result: RowResult) -> None:
        """A paid try that is asked again (structured output): in the journal now, its tokens
        and credits counted, the row not done yet (no breaker, no row counts)."""
        result.line = row.line
        self.keep_try(result)

    def keep_try(self, result: RowResult) -> None:
        """``record_try`` of a result that already names its line."""
        try:
            self.run_dir.append(result)
        except StorageError as error:
            self.stop(STOP_FATAL, error)
            return
        count_try(self.counters, result)

    def flush(self, failure: StorageError | None = None) -> None:
        """Hand the recorded rows' lines to the kernel, then count them (done from here on)."""
        recorded, self._unflushed = self._unflushed, []
        if not recorded:
            return  # nothing recorded since the last flush
        kept = len(recorded)
        try:
            if failure is not None:
                raise failure
            self.run_dir.flush()
        except StorageError as error:
            # Answers (maybe paid) that cannot be kept: those rows stay pending for the resume.
            kept = error.kept if isinstance(error, JournalWriteError) else 0
            self.counters.answers_unrecorded += sum(result.ok for result in recorded[kept:])
            self.stop(STOP_FATAL, error)
        for result in recorded[:kept]:
            self._count(result)

    def _count(self, result: RowResult) -> None:
        counters = self.counters
        if result.ok:
            counters.note_finish(result.finish_reason)
        if result.reused_from is not None:
            counters.rows_ok += 1  # answered by an earlier run: no tokens, no credits here
        elif result.ok:
            counters.rows_ok += 1
            if result.prompt_tokens is None:
                counters.missing_usage += 1
            counters.prompt_tokens += result.prompt_tokens or 0
            counters.completion_tokens += result.completion_tokens or 0
            counters.reasoning_tokens += result.reasoning_tokens or 0
        else:
            counters.rows_failed += 1
            counters.note_error(result.error_code or "error")
        counters.credits += row_credits(result.credits, result.credits_computed) or 0.0
