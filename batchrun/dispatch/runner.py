"""The only module that knows every other one: read rows, send them, record the answers.

One task group owns every task: a producer streaming manifest rows into a bounded channel,
``concurrency`` workers that build, limit, send (with retries) and journal each row, a progress
reporter and a signal watcher. A fatal answer, the budget or Ctrl-C stops dispatch; in-flight
requests finish and are recorded, so nothing already paid for is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from batchrun import __version__
from batchrun.api.client import ApiClient, ClientSettings, mask_key
from batchrun.core.errors import (
    BatchrunError,
    FatalError,
    RateLimitedError,
    RetryableError,
    RowError,
    StorageError,
    TransportError,
)
from batchrun.core.result import (
    STATUS_ERROR,
    STATUS_OK,
    Completion,
    RowResult,
    row_credits,
)
from batchrun.cost.budget import (
    BudgetExhausted,
    BudgetGate,
    CreditLedger,
    Reservation,
)
from batchrun.cost.catalog import Price, price_for, rules_for
from batchrun.dispatch import channel
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.dispatch.membudget import ByteBudget
from batchrun.dispatch.prepare import prepare_request
from batchrun.dispatch.progress import RunCounters, report_progress
from batchrun.dispatch.ratelimit import Limiter
from batchrun.dispatch.retrying import retry_loops
from batchrun.dispatch.structured import SchemaTries, count_try
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver, media_root_for
from batchrun.request.payload import StreamedBody
from batchrun.store.cache import AnswerCache
from batchrun.store.index import JournalIndex
from batchrun.store.journal import FSYNC_INTERVAL_S, JournalWriteError
from batchrun.store.keys import cache_key
from batchrun.store.rundir import RunDir
from batchrun.store.summary import RunSummary, summarize

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130

# An ok row whose answer carried no usage: flagged with this code (error_type "warning").
MISSING_USAGE = "missing_usage"
MISSING_USAGE_MESSAGE = ("the answer carried no usage: its tokens and cost are unknown "
                         "(the gateway billed it)")

STOP_FATAL = "fatal"
STOP_BUDGET = "budget"
STOP_INTERRUPT = "interrupt"


class DispatchStopped(Exception):
    """The run is stopping: this row was not sent and stays pending."""


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
    progress_interval_s: float = 5.0
    show_progress: bool = True
    # Send just these rows instead of streaming the manifest (a calibration sample).
    only_rows: tuple[Row, ...] | None = None
    # The spending cap's ledger (--max-credits); shared by a calibration sample and the run.
    budget: CreditLedger | None = None
    reuse: AnswerCache | None = None  # --reuse: answers of an earlier run, by request
    estimate_credits: float | None = None


@dataclass
class RunOutcome:
    counters: RunCounters
    stop_reason: str | None = None
    stop_error: BatchrunError | None = None
    rows_pending: int = 0

    @property
    def exit_code(self) -> int:
        if self.stop_reason == STOP_FATAL:
            return EXIT_FATAL
        if self.stop_reason == STOP_BUDGET:
            return EXIT_BUDGET
        if self.stop_reason == STOP_INTERRUPT:
            return EXIT_INTERRUPTED
        if self.rows_pending:
            return EXIT_ROWS_FAILED
        return EXIT_ROWS_FAILED if self.counters.rows_failed else EXIT_OK


@dataclass
class _Attempts:
    count: int = 0
    last_status: int | None = None
    first_sent_at: float | None = None
    errors: list[str] = field(default_factory=list)


class Runner:
    """Runs one plan; create, then ``await run()``."""

    def __init__(self, plan: RunPlan, client: ApiClient) -> None:
        self.plan = plan
        self.job = plan.job
        self.client = client
        self.price: Price = price_for(plan.job.model, {plan.job.model: plan.job.price}
                                      if plan.job.price else None)
        self.limiter = Limiter(rpm=plan.job.rpm, tpm=plan.job.tpm)
        self.media = MediaResolver(
            media_root_for(plan.manifest, plan.media_root or plan.job.media_root),
            max_file_bytes=plan.job.max_file_bytes,
        )
        self.media_rules = rules_for(plan.job.model)
        # Encoded bodies in flight share this many bytes; a worker waits for room before it
        # reads a file, so peak memory follows the budget, not the files' sizes.
        self.bytes_in_flight = ByteBudget(plan.job.media_budget_bytes)
        # The spending cap (--max-credits): a bound is reserved before each send.
        self.budget = BudgetGate(plan.budget, self.price) if plan.budget is not None else None
        self._encoders = anyio.CapacityLimiter(2)
        self.counters = RunCounters(
            rows_total=plan.rows_total, estimate_credits=plan.estimate_credits
        )
        self.breaker = CircuitBreaker(plan.job.breaker_first, plan.job.breaker_window,
                                      plan.job.breaker_rate)
        self.schema_tries = SchemaTries(plan.job.schema_retries)
        self.stop_reason: str | None = None
        self.stop_error: BatchrunError | None = None
        self._stopping = anyio.Event()
        # The hot path reads this plain flag (an Event's is_set is a call per check).
        self.stopping = False
        self._unflushed: list[RowResult] = []  # journaled, waiting for _flush_recorded
        # Pages and seconds are read when a limit needs the token count (--tpm) or the
        # budget needs an honest bound (--max-credits).
        self._counts = plan.job.tpm is not None or self.budget is not None
        self._retry_loop = retry_loops(max_attempts=plan.job.max_attempts,
                                       max_wait_s=plan.job.max_retry_wait_s,
                                       sleep=self._back_off)
        self.counters.describe_rate = self.limiter.describe
        # Waits on the limiter that a stop cancels: rows not yet on the wire are not sent.
        self._limiter_waits: set[anyio.CancelScope] = set()
        # A row backing off lends its worker to a stand-in, so the wire stays full; when it
        # comes back, the first worker to finish a row retires (``_excess_workers``).
        self._workers: anyio.abc.TaskGroup | None = None
        self._rows: MemoryObjectReceiveStream[Row] | None = None
        self._excess_workers = 0

    # --- stopping ----------------------------------------------------------------------
    def stop(self, reason: str, error: BatchrunError | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_error = error
        self.stopping = True
        self._stopping.set()
        for wait in self._limiter_waits:
            wait.cancel()
        if self.budget is not None:
            self.budget.close()

    async def _back_off(self, seconds: float) -> None:
        """A row's wait before its retry: a stop cuts it short, and a stand-in worker takes
        the row's place meanwhile, so one row's Retry-After never idles a wire slot."""
        if seconds <= 0:
            return
        counters = self.counters
        counters.waiting += 1
        stand_in = self._workers is not None and self._rows is not None and not self.stopping
        if stand_in:
            self._workers.start_soon(self._work, self._rows.clone())  # type: ignore[union-attr]
        try:
            with anyio.move_on_after(seconds):
                await self._stopping.wait()
        finally:
            counters.waiting -= 1
            if stand_in:
                self._excess_workers += 1  # back at work: one worker too many from now

    async def _wait_for_limiter(self, tokens: int) -> None:
        """Wait for the limiter unless the run stops meanwhile (then the row stays pending)."""
        self.counters.waiting += 1
        try:
            with anyio.CancelScope() as wait:
                self._limiter_waits.add(wait)
                try:
                    await self.limiter.acquire(tokens)
                finally:
                    self._limiter_waits.discard(wait)
        finally:
            self.counters.waiting -= 1
        if self.stopping:
            raise DispatchStopped

    # --- the run -----------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        run_dir = self.plan.run_dir
        self.counters.rows_skipped = self.plan.index.count_done(
            retry_failed=self.plan.retry_failed
        )
        send_rows, receive_rows = anyio.create_memory_object_stream[Row](
            max_buffer_size=self.job.concurrency
        )
        run_dir.open_journal()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._watch_signals, outer.cancel_scope)
                outer.start_soon(self._sync_journal)
                if self.plan.show_progress:
                    outer.start_soon(self._report_progress)
                # The receiver stays open for stand-in workers; the rows end for everybody
                # when the producer closes its side.
                with receive_rows:
                    async with anyio.create_task_group() as workers:
                        self._workers, self._rows = workers, receive_rows
                        workers.start_soon(self._produce, send_rows)
                        for _ in range(self.job.concurrency):
                            workers.start_soon(self._work, receive_rows.clone())
                    self._workers = self._rows = None
                outer.cancel_scope.cancel()
        finally:
            self._flush_recorded()
            run_dir.close_journal()
        pending = max(
            0, self.counters.rows_total - self.counters.rows_skipped - self.counters.rows_done_now
        )
        return RunOutcome(
            counters=self.counters,
            stop_reason=self.stop_reason,
            stop_error=self.stop_error,
            rows_pending=pending,
        )

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        except (ValueError, NotImplementedError, RuntimeError):
            return  # not the main thread (embedded use): no signal handling
        with receiver as signals:
            async for _ in signals:
                if self.stopping:
                    sys.stderr.write("\nsecond interrupt: abandoning requests in flight\n")
                    scope.cancel()
                    return
                sys.stderr.write(
                    "\ninterrupt: no new requests; waiting for the ones in flight "
                    "(Ctrl-C again to abandon them)\n"
                )
                self.stop(STOP_INTERRUPT)

    async def _sync_journal(self) -> None:
        """fsync the journal at least every second, off the event loop."""
        while True:
            await anyio.sleep(FSYNC_INTERVAL_S / 2)
            await anyio.to_thread.run_sync(self.plan.run_dir.sync_if_unsynced)

    async def _report_progress(self) -> None:
        await report_progress(self.counters, interval_s=self.plan.progress_interval_s)

    async def _produce(self, send_rows: anyio.abc.ObjectSendStream[Row]) -> None:
        index = self.plan.index
        retry_failed = self.plan.retry_failed
        rows: Iterable[Row] = (
            self.plan.only_rows
            if self.plan.only_rows is not None
            else iter_rows(self.plan.manifest, self.job, check_duplicates=False,
                           done_lines=index.done_lines(retry_failed=retry_failed))
        )
        async with send_rows:
            for row in rows:
                if self.stopping:
                    return
                if index.is_done_row(row, retry_failed=retry_failed):
                    continue
                await channel.send(send_rows, row)

    async def _work(self, receive_rows: ObjectReceiveStream[Row]) -> None:
        async with receive_rows:
            async for row in channel.receive_all(receive_rows):
                if self.stopping:
                    continue  # drain: the row stays pending for the resume
                await self._process(row)
                if self._excess_workers:
                    self._excess_workers -= 1  # a row back from its backoff took this place
                    return

    async def _process(self, row: Row) -> None:
        started_at = time.time()
        try:
            counts = self._counts
            prepared = prepare_request(row, self.job, self.media, probe=counts, counts=counts,
                                       rules=self.media_rules)
        except RowError as error:
            self._record(row, self._error_result(row.id, error, _Attempts(), started_at, None))
            return
        # Only --tpm uses it (the limiter and its settling); without it no row is counted.
        estimated_tokens = prepared.estimate.prompt_tokens if prepared.estimate else 0
        prompt_bound = prepared.prompt_bound if self.budget is not None else 0
        request_sha: str | None = None
        if self.plan.reuse is not None:
            # The cache is keyed by the request's hash: with local media that means reading
            # the files once more (in a thread, block by block) before deciding to send.
            request_sha = await anyio.to_thread.run_sync(prepared.sha256)
            if self._reuse(row, request_sha):
                prepared.close()
                return
        attempts = _Attempts()
        send_started = 0.0
        try:
            completion: Completion | None = None
            async for attempt in self._retry_loop():
                with attempt:
                    completion = None
                    if self.stopping:
                        raise DispatchStopped
                    tokens = estimated_tokens + self.job.expected_output_tokens
                    if not self.limiter.acquire_now(tokens):
                        await self._wait_for_limiter(tokens)
                    attempts.count += 1
                    self.counters.requests_sent += 1
                    if attempts.first_sent_at is None:
                        attempts.first_sent_at = time.time()
                    reservation = (await self._reserve(prompt_bound) if self.budget is not None
                                   else None)
                    # Media are read and encoded block by block as the socket takes them,
                    # while the body's full size is held from the byte budget. A body without
                    # local media is already in memory (built with the row): holding its
                    # bytes could not keep memory down, so it goes as it is.
                    async with self.bytes_in_flight.hold(prepared.size if prepared.media else 0):
                        body: bytes | StreamedBody = (
                            prepared.stream(self._encoders) if prepared.media
                            else prepared.skeleton)
                        send_started = time.perf_counter()  # latency: the wire, not the wait
                        self.counters.in_flight += 1
                        try:
                            completion = await self.client.complete(body, stream=prepared.sse)
                        except BaseException as error:
                            if isinstance(error, RateLimitedError):
                                self.limiter.rate_limited(error.retry_after, error.rate_limit)
                            if reservation is not None and self.budget is not None:
                                self.budget.settle_failure(reservation, error)
                            if (isinstance(error, TransportError) and isinstance(body, StreamedBody)
                                    and body.error is not None):
                                raise body.error from None  # a file changed under us: row error
                            raise
                        finally:
                            self.counters.in_flight -= 1
                            request_sha = (body.sha256 if isinstance(body, StreamedBody)
                                           else prepared.skeleton_sha256()) or request_sha
                        if reservation is not None and self.budget is not None:
                            self.budget.settle(reservation, completion)
                        self.limiter.answered(completion.rate_limit)
                if attempt.error is None:
                    break  # answered: the loop would only raise StopAsyncIteration to end
        except DispatchStopped:
            return
        except FatalError as error:
            self._record(row, self._error_result(row.id, error, attempts, started_at,
                                                 request_sha, retryable=True))
            self.stop(STOP_FATAL, error)
            return
        except RetryableError as error:
            # Retries exhausted: a row error now, but a resume sends it again.
            self._record(row, self._error_result(row.id, error, attempts, started_at,
                                                 request_sha, retryable=True))
            return
        except BatchrunError as error:
            self._record(row, self._error_result(row.id, error, attempts, started_at, request_sha))
            return
        finally:
            prepared.close()
        assert completion is not None and request_sha is not None
        latency_ms = (time.perf_counter() - send_started) * 1000.0
        result = self._ok_result(row.id, completion, attempts, started_at, request_sha,
                                 latency_ms, price=self._price_of(prepared.model))
        # A structured answer that does not fit its schema is asked again (dispatch/structured).
        followup = self.schema_tries.settle(row, result)
        if followup is None:
            self._record(row, result)
        else:
            self._record_try(row, result)
        if completion.prompt_tokens is not None:
            self.limiter.settle_tokens(
                estimated_tokens + self.job.expected_output_tokens,
                completion.prompt_tokens + (completion.completion_tokens or 0),
            )
        if followup is not None and not self.stopping:
            await self._process(followup)

    def _record_try(self, row: Row, result: RowResult) -> None:
        """A paid try that is asked again: in the journal now, the row not done yet."""
        result.line = row.line
        try:
            self.plan.run_dir.append(result)
        except StorageError as error:
            self.stop(STOP_FATAL, error)
            return
        count_try(self.counters, result)

    async def _reserve(self, prompt_bound: int) -> Reservation | None:
        """Hold the budget's bound for one attempt; at the cap, stop dispatch."""
        if self.budget is None:
            return None
        try:
            reservation = await self.budget.reserve(prompt_bound)
        except BudgetExhausted:
            self.stop(STOP_BUDGET)
            raise DispatchStopped from None
        if reservation is None:
            raise DispatchStopped
        return reservation

    def _price_of(self, model: str) -> Price:
        """The price of a row's model (a row may name its own): the job's for its model."""
        if model == self.job.model or not model:
            return self.price
        return price_for(model, {self.job.model: self.job.price} if self.job.price else None)

    # --- results -----------------------------------------------------------------------
    def _ok_result(
        self,
        row_id: str,
        completion: Completion,
        attempts: _Attempts,
        started_at: float,
        request_sha: str,
        latency_ms: float,
        *,
        price: Price | None = None,
    ) -> RowResult:
        price = price or self.price
        credits_computed = None
        if completion.has_usage:
            credits_computed = price.credits(
                completion.prompt_tokens or 0, completion.completion_tokens or 0
            )
        credits = completion.credits_consumed
        billed = row_credits(credits, credits_computed)
        # Paid for but of unknown cost: an ok row, flagged, never silently zero.
        warning = None if completion.has_usage else MISSING_USAGE_MESSAGE
        return RowResult(
            id=row_id,
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
            attempts=attempts.count,
            latency_ms=latency_ms,
            started_at=attempts.first_sent_at or started_at,
            finished_at=time.time(),
            request_sha256=request_sha,
            response_id=completion.response_id,
            extra=orjson.dumps(completion.extra).decode() if completion.extra else None,
            error_code=MISSING_USAGE if warning else None,
            error_type="warning" if warning else None,
            error_message=warning,
        )

    def _error_result(
        self,
        row_id: str,
        error: BatchrunError,
        attempts: _Attempts,
        started_at: float,
        request_sha: str | None,
        *,
        retryable: bool = False,
    ) -> RowResult:
        return RowResult(
            id=row_id,
            status=STATUS_ERROR,
            http_status=error.http_status,
            error_code=error.code,
            error_type=error.error_type,
            error_message=mask_key(error.message, self.plan.api_key),
            attempts=attempts.count,
            started_at=attempts.first_sent_at or started_at,
            finished_at=time.time(),
            request_sha256=request_sha,
            retryable=retryable,
        )

    def _reuse(self, row: Row, request_sha: str) -> bool:
        """Answer the row from --reuse when its request was answered there; True if so."""
        assert self.plan.reuse is not None
        key = cache_key(self.plan.endpoint, request_sha)
        record = self.plan.reuse.lookup(key)
        if record is None:
            return False
        self._record(row, self.plan.reuse.reused_result(
            record, row_id=row.id, key=key, request_sha=request_sha, now=time.time()))
        return True

    def _record(self, row: Row, result: RowResult) -> None:
        """Journal the row; it counts as done once its line is in the kernel.

        Lines of every row finished in one turn of the event loop go to the kernel together
        (``_flush_recorded``, scheduled by the first of them): one write syscall instead of
        one per row. A kill in between loses them as it loses answers not yet read.
        """
        result.line = row.line
        if result.cache_key is None and result.request_sha256 is not None:
            result.cache_key = cache_key(self.plan.endpoint, result.request_sha256)
        result = self.breaker.after_trip(result)
        try:
            self.plan.run_dir.append(result, flush=False)
        except StorageError as error:
            self._unflushed.append(result)
            self._flush_recorded(error)
            return
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush_recorded)
        self._unflushed.append(result)
        trip = self.breaker.observe(result)
        if trip is not None:
            # Rows that failed only because the run is broken are sent again on resume.
            for reopened in trip.reopen:
                with contextlib.suppress(StorageError):
                    self.plan.run_dir.append(reopened)
            self.stop(STOP_FATAL, trip.error)

    def _flush_recorded(self, failure: StorageError | None = None) -> None:
        """Hand the recorded rows' lines to the kernel, then count them (done from here on)."""
        recorded, self._unflushed = self._unflushed, []
        if not recorded:
            return  # nothing recorded since the last flush
        kept = len(recorded)
        try:
            if failure is not None:
                raise failure
            self.plan.run_dir.flush()
        except StorageError as error:
            # Answers (maybe paid) that cannot be kept: those rows stay pending for the resume.
            kept = error.kept if isinstance(error, JournalWriteError) else 0
            self.counters.answers_unrecorded += sum(result.ok for result in recorded[kept:])
            self.stop(STOP_FATAL, error)
        for result in recorded[:kept]:
            self._record_counts(result)

    def _record_counts(self, result: RowResult) -> None:
        counters = self.counters
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


async def execute(
    plan: RunPlan,
    *,
    client_factory: Callable[[ClientSettings], ApiClient] = ApiClient,
    before_dispatch: Callable[[ApiClient], Awaitable[None]] | None = None,
) -> RunOutcome:
    """Open the client, run the plan, always close the client."""
    settings = ClientSettings(
        endpoint=plan.endpoint,
        api_key=plan.api_key,
        max_connections=plan.job.concurrency,
        connect_timeout_s=plan.job.connect_timeout_s,
        read_timeout_s=plan.job.read_timeout_s,
        max_retry_after_s=plan.job.max_retry_wait_s,
        request_timeout_s=plan.job.request_timeout_s,
    )
    async with client_factory(settings) as client:
        if before_dispatch is not None:
            await before_dispatch(client)
        return await Runner(plan, client).run()


def finish(
    plan: RunPlan, outcome: RunOutcome, *, fingerprint: str, resume_command: str
) -> RunSummary:
    """Compact results.parquet from the journal and total the whole run (all sessions)."""
    summary = summarize(plan.run_dir.load_index(), plan.rows_total, resume_command=resume_command)
    metadata = {
        "batchrun_version": __version__,
        "job": plan.job.describe(),
        "model": plan.job.model,
        "endpoint": plan.endpoint,
        "manifest": str(plan.manifest.resolve()),
        "manifest_fingerprint": fingerprint,
        "stop_reason": outcome.stop_reason,
        "totals": summary.as_dict(),
    }
    try:
        plan.run_dir.compact(metadata)
    except StorageError as error:
        # The journal is complete; results.parquet is rebuilt by the next run or export.
        sys.stderr.write(f"warning: {error.message}; every finished row is in the journal: "
                         "free space, then run the same command to write it\n")
    return summary
