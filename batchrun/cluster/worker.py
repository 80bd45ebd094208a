"""A dispatch worker: the local engine's runner (``dispatch.runner.Runner``, the same code)
over shards of manifest lines, with leases instead of local buckets and an outbox instead of
the journal: the driver collects finished rows as they come and is the only one that writes.

``DispatchWorker`` is the actor's body (``ray_runtime`` makes it a Ray actor); nothing here
imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import anyio

from batchrun.api.client import ApiClient, ClientSettings
from batchrun.cluster.leases import Call, GovernorLink, LeasedBudget, LeasedLimiter
from batchrun.cluster.messages import KIND_ROW, KIND_TRY, Shard, WorkerReport, WorkerSpec
from batchrun.cluster.shards import ShardReader
from batchrun.core.errors import BatchrunError, InputError
from batchrun.core.result import RowResult
from batchrun.dispatch import channel
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.dispatch.gates import CreditGate, RequestGate
from batchrun.dispatch.plan import STOP_FATAL, RunOutcome, RunPlan
from batchrun.dispatch.recording import Recorder
from batchrun.dispatch.runner import Runner
from batchrun.manifest.rows import Row
from batchrun.store.cache import AnswerCache
from batchrun.store.index import JournalIndex

# The longest ``collect`` waits for something to report (the driver's loop re-checks its
# shards and its stop at least this often).
COLLECT_WAIT_S = 0.2
# Once something is there, answers finishing in the next GATHER_S go in the same report (a
# crash loses at most these: they are journaled ~50 ms later than they could be).
GATHER_S = 0.05
GATHER_ROWS = 256


class Outbox:
    """Finished rows and tries waiting for the driver, and the shards they complete."""

    def __init__(self) -> None:
        self.results: list[tuple[str, RowResult]] = []
        self.shards_done: list[tuple[int, bool]] = []
        self._open: dict[int, list[int]] = {}  # shard -> [rows not finished, reached end]
        self._shard_of: dict[int, int] = {}  # line -> shard
        self.changed = asyncio.Event()

    def opened(self, shard: Shard, rows: list[Row], reached_end: bool) -> None:
        for row in rows:
            self._shard_of[row.line] = shard.number
        self._open[shard.number] = [len(rows), int(reached_end)]
        if not rows:
            self._close(shard.number)

    def put(self, kind: str, result: RowResult) -> None:
        self.results.append((kind, result))
        if kind == KIND_ROW and result.line is not None:
            number = self._shard_of.pop(result.line, None)
            if number is not None:
                self._open[number][0] -= 1
                if self._open[number][0] == 0:
                    self._close(number)
        self.changed.set()

    def _close(self, number: int) -> None:
        _, reached_end = self._open.pop(number)
        self.shards_done.append((number, bool(reached_end)))
        self.changed.set()


class OutboxRecorder(Recorder):
    """The local engine's recorder, keeping rows in the outbox instead of the journal."""

    outbox: Outbox

    def keep(self, result: RowResult) -> None:
        self.outbox.put(KIND_ROW, result)

    def keep_try(self, result: RowResult) -> None:
        self.outbox.put(KIND_TRY, result)

    def flush(self, failure: Any = None) -> None:
        return None  # the driver writes and counts


class ShardRunner(Runner):
    """``Runner`` fed shards by the driver, leasing from the governor, recording to an outbox."""

    def __init__(self, plan: RunPlan, client: ApiClient, link: GovernorLink,
                 outbox: Outbox) -> None:
        self.link = link
        self.outbox = outbox
        self.shards: asyncio.Queue[Shard | None] = asyncio.Queue()
        self.reader = ShardReader(plan.manifest, plan.job)
        super().__init__(plan, client)

    def _make_limiter(self) -> RequestGate:
        # A lease's worth of this worker's demand: up to twice its requests in flight.
        return LeasedLimiter(self.link, ask_for=2 * self.job.concurrency)

    def _make_budget(self) -> CreditGate | None:
        if self.plan.budget is None:
            return None
        return LeasedBudget(self.plan.budget, self.price, self.link)

    def _make_recorder(self) -> Recorder:
        recorder = OutboxRecorder(
            self.plan.run_dir, endpoint=self.plan.key_endpoint or self.plan.endpoint,
            api_key=self.plan.api_key, price=self.price, counters=self.counters,
            stop=self.stop,
            breaker=CircuitBreaker(first_n=0, window=0))  # the driver's watches the run
        recorder.outbox = self.outbox
        return recorder

    def stop(self, reason: str, error: BatchrunError | None = None) -> None:
        super().stop(reason, error)
        self.outbox.changed.set()  # the driver hears of it at once

    async def run(self) -> RunOutcome:
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.link.report_loop)
                await self._dispatch()
                outer.cancel_scope.cancel()
        finally:
            if self.link.news.has_news:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.link.ask()  # the last answers and spending, for the governor
        return self.outcome()

    async def _produce(self, send_rows: Any) -> None:
        async with send_rows:
            while not self.stopping:
                shard = await self.shards.get()
                if shard is None:
                    return
                try:
                    rows, reached_end = await anyio.to_thread.run_sync(self.reader.read, shard)
                except InputError as error:
                    # Readable on the driver, not here: a node without the shared files.
                    self.stop(STOP_FATAL, InputError(
                        f"{error.message} (read by dispatch worker {self.link.worker} on "
                        f"{socket.gethostname()}): every node must read the manifest and "
                        "the media at the same path"))
                    return
                self.outbox.opened(shard, rows, reached_end)
                for row in rows:
                    if self.stopping:
                        return
                    await channel.send(send_rows, row)


class DispatchWorker:
    """One dispatch worker of a cluster run (the body of its actor)."""

    def __init__(self, spec: WorkerSpec, call: Call) -> None:
        self.spec = spec
        self.outbox = Outbox()
        self.link = GovernorLink(spec.name, call)
        self.runner: ShardRunner | None = None
        self.outcome: RunOutcome | None = None
        self.failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._client = contextlib.AsyncExitStack()

    async def start(self, api_key: str) -> None:
        """Open the client and the runner, and start sending as shards come."""
        spec = self.spec
        job = spec.job
        # The worker never writes a run directory nor reads an index: the driver does both.
        plan = RunPlan(manifest=spec.manifest, run_dir=None,  # type: ignore[arg-type]
                       job=job, endpoint=spec.endpoint, api_key=api_key, rows_total=0,
                       index=JournalIndex(Path(os.devnull)), media_root=spec.media_root,
                       key_endpoint=spec.key_endpoint, budget=spec.ledger,
                       reuse=AnswerCache.open(spec.reuse) if spec.reuse else None)
        settings = ClientSettings(
            endpoint=spec.endpoint, api_key=api_key, max_connections=job.concurrency,
            connect_timeout_s=job.connect_timeout_s, read_timeout_s=job.read_timeout_s,
            max_retry_after_s=job.max_retry_wait_s, request_timeout_s=job.request_timeout_s)
        client = await self._client.enter_async_context(ApiClient(settings))
        self.runner = ShardRunner(plan, client, self.link, self.outbox)
        self._task = asyncio.get_running_loop().create_task(self._main(self.runner))

    async def _main(self, runner: ShardRunner) -> None:
        try:
            self.outcome = await runner.run()
        except BaseException as error:  # noqa: BLE001 - reported to the driver, not lost
            self.failure = error
            raise
        finally:
            await self._client.aclose()
            self.outbox.changed.set()

    async def add_shard(self, shard: Shard) -> None:
        await self._runner().shards.put(shard)

    async def close(self) -> None:
        """No more shards: the runner ends once the rows it has are finished."""
        await self._runner().shards.put(None)

    async def stop(self, reason: str) -> None:
        self._runner().stop(reason)
        await self._runner().shards.put(None)

    async def collect(self, wait_s: float = COLLECT_WAIT_S) -> WorkerReport:
        """What finished since the last call; waits up to ``wait_s`` for something."""
        outbox = self.outbox
        if not outbox.results and not outbox.shards_done and not self._finished():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.changed.wait(), wait_s)
        # Let a few more answers join (each call costs both sides a Ray round trip), unless
        # the run is stopping or ending: the driver hears of that at once.
        runner = self.runner
        if (len(outbox.results) < GATHER_ROWS and not self._finished()
                and not (runner is not None and runner.stopping)):
            await asyncio.sleep(GATHER_S)
        outbox.changed.clear()
        report = WorkerReport(results=outbox.results, shards_done=outbox.shards_done,
                              rate_text=self.link.rate_text, finished=self._finished())
        outbox.results, outbox.shards_done = [], []
        if runner is not None:
            counters = runner.counters
            report.in_flight, report.waiting = counters.in_flight, counters.waiting
            report.requests_sent = counters.requests_sent
            report.stop_reason, report.stop_error = runner.stop_reason, runner.stop_error
            if isinstance(runner.budget, LeasedBudget):
                report.budget_refused = runner.budget.ledger.refused
        if self.failure is not None and report.stop_error is None:
            report.stop_reason = report.stop_reason or "fatal"
            report.stop_error = BatchrunError(f"dispatch worker failed: {self.failure!r}")
        return report

    def _finished(self) -> bool:
        return self._task is not None and self._task.done()

    def _runner(self) -> ShardRunner:
        if self.runner is None:
            raise RuntimeError("the dispatch worker was not started")
        return self.runner
