"""The only module that knows every other one: read rows, send them, record the answers.

One task group owns every task: a producer streaming manifest rows into a bounded channel,
``concurrency`` workers that build, limit, send (with retries) and journal each row, the
caller's progress display and a signal watcher. A fatal answer, the budget or Ctrl-C stops
dispatch; in-flight requests finish and are recorded, so nothing already paid for is lost.

A row goes through three steps (``_process``): ``flight.prepare`` (its request built and
priced; with ``--reuse``, maybe answered by an earlier run), ``_attempt`` as often as the retry
policy allows (a limiter slot, the budget's reservation, the body's bytes, one send), then
``_settle`` or the ``Recorder`` journals what came of it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from batchrun.api.client import ApiClient, ClientSettings
from batchrun.core.errors import (
    BatchrunError,
    RateLimitedError,
    RowError,
    StorageError,
    TransportError,
)
from batchrun.core.result import Completion
from batchrun.cost.budget import BudgetExhausted, BudgetGate, Reservation
from batchrun.cost.catalog import Price, price_for, rules_for
from batchrun.dispatch import channel
from batchrun.dispatch.background import sync_journal, watch_interrupts
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.dispatch.failures import failure_cause
from batchrun.dispatch.flight import Flight, prepare
from batchrun.dispatch.gates import CreditGate, RequestGate
from batchrun.dispatch.membudget import ByteBudget
from batchrun.dispatch.plan import STOP_BUDGET, STOP_FATAL, RunOutcome, RunPlan
from batchrun.dispatch.progress import RunCounters
from batchrun.dispatch.ratelimit import Limiter
from batchrun.dispatch.recording import Recorder
from batchrun.dispatch.retrying import retry_loops
from batchrun.dispatch.structured import SchemaTries
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver, media_root_for
from batchrun.request.payload import StreamedBody


class DispatchStopped(Exception):
    """The run is stopping: this row was not sent and stays pending."""


class Runner:
    """Runs one plan; create, then ``await run()``."""

    def __init__(self, plan: RunPlan, client: ApiClient) -> None:
        self.plan = plan
        self.job = plan.job
        self.client = client
        self.price: Price = price_for(plan.job.model, {plan.job.model: plan.job.price}
                                      if plan.job.price else None)
        self.limiter: RequestGate = self._make_limiter()
        self.media = MediaResolver(
            media_root_for(plan.manifest, plan.media_root or plan.job.media_root),
            max_file_bytes=plan.job.max_file_bytes,
        )
        self.media_rules = rules_for(plan.job.model)
        # Encoded bodies in flight share this many bytes; a worker waits for room before it
        # reads a file, so peak memory follows the budget, not the files' sizes.
        self.bytes_in_flight = ByteBudget(plan.job.media_budget_bytes)
        # The spending cap (--max-credits): a bound is reserved before each send.
        self.budget: CreditGate | None = self._make_budget()
        self._encoders = anyio.CapacityLimiter(2)
        self.counters = RunCounters(
            rows_total=plan.rows_total, estimate_credits=plan.estimate_credits
        )
        self.recorder = self._make_recorder()
        # Structured answers that do not fit their schema are asked again (dispatch/structured).
        self.schema_tries = SchemaTries(plan.job.schema_retries)
        self.stop_reason: str | None = None
        self.stop_error: BatchrunError | None = None
        self._stopping = anyio.Event()
        # The hot path reads this plain flag (an Event's is_set is a call per check).
        self.stopping = False
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

    # --- the parts another engine replaces (``cluster.worker``: leases from a governor, an
    # outbox instead of the journal) -----------------------------------------------------
    def _make_limiter(self) -> RequestGate:
        return Limiter(rpm=self.job.rpm, tpm=self.job.tpm)

    def _make_budget(self) -> CreditGate | None:
        return BudgetGate(self.plan.budget, self.price) if self.plan.budget is not None else None

    def _make_recorder(self) -> Recorder:
        job = self.job
        return Recorder(
            self.plan.run_dir, endpoint=self.plan.key_endpoint or self.plan.endpoint,
            api_key=self.plan.api_key, price=self.price, counters=self.counters, stop=self.stop,
            breaker=CircuitBreaker(job.breaker_first, job.breaker_window, job.breaker_rate))

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
        workers, rows = self._workers, self._rows
        stand_in = workers is not None and rows is not None and not self.stopping
        if workers is not None and rows is not None and stand_in:
            workers.start_soon(self._work, rows.clone())
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
        run_dir.open_journal()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(watch_interrupts, self, outer.cancel_scope, self.plan.notice)
                outer.start_soon(sync_journal, run_dir, self)
                if self.plan.progress is not None:
                    outer.start_soon(self.plan.progress, self.counters)
                await self._dispatch()
                outer.cancel_scope.cancel()
        finally:
            self.recorder.flush()
            self._close_journal()
        return self.outcome()

    def outcome(self) -> RunOutcome:
        """What the run did, once dispatch has ended."""
        return RunOutcome(
            counters=self.counters,
            stop_reason=self.stop_reason,
            stop_error=self.stop_error,
            rows_pending=self.counters.rows_pending,
        )

    async def _dispatch(self) -> None:
        """The producer and the workers, until every row is taken (or the run stops)."""
        send_rows, receive_rows = anyio.create_memory_object_stream[Row](
            max_buffer_size=self.job.concurrency
        )
        # The receiver stays open for stand-in workers; the rows end for everybody when the
        # producer closes its side.
        with receive_rows:
            async with anyio.create_task_group() as workers:
                self._workers, self._rows = workers, receive_rows
                workers.start_soon(self._produce, send_rows)
                for _ in range(self.job.concurrency):
                    workers.start_soon(self._work, receive_rows.clone())
            self._workers = self._rows = None

    def _close_journal(self) -> None:
        """The last fsync failing is the same fatal stop: the lines are in the kernel (done),
        the run says the disk refused instead of ending in a bare error."""
        try:
            self.plan.run_dir.close_journal()
        except StorageError as error:
            self.stop(STOP_FATAL, error)

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

    # --- one row -----------------------------------------------------------------------
    async def _process(self, row: Row) -> None:
        """Prepare, send (retrying as the policy says), settle. A row the run stopped before
        sending stays pending; every other one ends as one journal line."""
        started_at = time.time()
        try:
            flight = prepare(row, self.job, self.media, started_at=started_at,
                             counts=self._counts, budgeted=self.budget is not None,
                             rules=self.media_rules)
        except RowError as error:
            self.recorder.error(row, error, attempts=0, started_at=started_at, request_sha=None)
            return
        try:
            if self.plan.reuse is not None and await self._reused(flight):
                return
            # The loop re-raises the last error when the policy gives up, or at once for an
            # error not worth another try.
            async for attempt in self._retry_loop():
                with attempt:
                    completion = await self._attempt(flight)
                if attempt.error is None:
                    break  # answered: the loop would only raise StopAsyncIteration to end
                flight.failures.append(failure_cause(attempt.error))  # retries by cause
        except DispatchStopped:
            return
        except BatchrunError as error:
            self.recorder.error(row, error, attempts=flight.attempts, request_sha=flight.sha,
                                started_at=flight.first_sent_at or started_at,
                                failed_attempts=flight.failures or None)
            return
        finally:
            flight.request.close()
        followup = self._settle(flight, completion)
        if followup is not None and not self.stopping:
            await self._process(followup)  # the same row, asked again with the schema's error

    async def _reused(self, flight: Flight) -> bool:
        """--reuse: answered by the earlier run when it holds this very request."""
        assert self.plan.reuse is not None
        # The cache is keyed by the request's hash: with local media that means reading the
        # files once more (in a thread, block by block) before deciding to send.
        flight.sha = await anyio.to_thread.run_sync(flight.request.sha256)
        return self.recorder.reused(flight.row, self.plan.reuse, flight.sha)

    async def _attempt(self, flight: Flight) -> Completion:
        """One try: a limiter slot, the budget's reservation, the body's bytes, one send."""
        if self.stopping:
            raise DispatchStopped
        if not self.limiter.acquire_now(flight.tokens):
            await self._wait_for_limiter(flight.tokens)
        flight.attempts += 1
        counters = self.counters
        counters.requests_sent += 1
        if flight.first_sent_at is None:
            flight.first_sent_at = time.time()
        reservation = await self._reserve(flight.prompt_bound) if self.budget is not None else None
        request = flight.request
        # Media are read and encoded block by block as the socket takes them, while the body's
        # full size is held from the byte budget. A body without local media is already in
        # memory (built with the row): holding its bytes could not keep memory down, so it
        # goes as it is.
        async with self.bytes_in_flight.hold(request.size if request.media else 0):
            body: bytes | StreamedBody = (request.stream(self._encoders) if request.media
                                          else request.skeleton)
            flight.send_started = time.perf_counter()  # latency: the wire, not the wait
            counters.in_flight += 1  # on the wire from here: not while waiting above
            try:
                completion = await self.client.complete(body, stream=request.sse)
            except BaseException as error:
                self._refused(error, reservation)
                if (isinstance(error, TransportError) and isinstance(body, StreamedBody)
                        and body.error is not None):
                    raise body.error from None  # a file changed under us: a row error
                raise
            finally:
                counters.in_flight -= 1
                flight.sha = (body.sha256 if isinstance(body, StreamedBody)
                              else request.skeleton_sha256()) or flight.sha
            if reservation is not None and self.budget is not None:
                self.budget.settle(reservation, completion)
            self.limiter.answered(completion.rate_limit)
        return completion

    def _refused(self, error: BaseException, reservation: Reservation | None) -> None:
        """A send that raised: a 429 tells the limiter; the reservation is released (an error
        answer is not billed) or kept (a broken transfer may have been)."""
        if isinstance(error, RateLimitedError):
            self.limiter.rate_limited(error.retry_after, error.rate_limit)
        if reservation is not None and self.budget is not None:
            self.budget.settle_failure(reservation, error)

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

    # --- settling ----------------------------------------------------------------------
    def _settle(self, flight: Flight, completion: Completion) -> Row | None:
        """An answer: journal it, and tell the limiter what the row really weighed. The row to
        send again when its structured answer does not fit its schema, else None."""
        assert flight.sha is not None
        latency_ms = (time.perf_counter() - flight.send_started) * 1000.0
        row = flight.row
        result = self.recorder.ok(row, completion, attempts=flight.attempts,
                                  started_at=flight.first_sent_at or flight.started_at,
                                  request_sha=flight.sha, latency_ms=latency_ms,
                                  failed_attempts=flight.failures or None,
                                  price=self._price_of(flight.request.model))
        followup = self.schema_tries.settle(row, result)
        if followup is None:
            self.recorder.record(row, result)
        else:
            self.recorder.record_try(row, result)  # paid, journaled; the row is not done
        if completion.prompt_tokens is not None:
            self.limiter.settle_tokens(
                flight.tokens, completion.prompt_tokens + (completion.completion_tokens or 0))
        return followup

    def _price_of(self, model: str) -> Price:
        """The price of a row's model (a row may name its own): the job's for its model."""
        if model == self.job.model or not model:
            return self.price
        return price_for(model, {self.job.model: self.job.price} if self.job.price else None)


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
