"""The driver of a cluster run: the only writer of the run directory.

It starts the governor and the dispatch workers, hands out shards a few at a time, collects
finished rows as they come (never a whole shard at the end), journals them exactly as a run on
one machine does (``dispatch.recording.Recorder``, circuit breaker included), shows the
progress and stops everything on a fatal answer, the cap or Ctrl-C. A worker that is lost
has its unfinished lines handed to the others; only its answers in flight are paid twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from batchrun.api.client import ApiClient, ClientSettings
from batchrun.cluster.messages import KIND_ROW, WorkerReport, WorkerSpec
from batchrun.cluster.ray_runtime import RayRuntime, run_key
from batchrun.cluster.shards import ShardBook
from batchrun.core.errors import BatchrunError, FatalError, InputError
from batchrun.cost.catalog import price_for
from batchrun.dispatch.background import sync_journal, watch_interrupts
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.dispatch.plan import STOP_BUDGET, STOP_FATAL, RunOutcome, RunPlan
from batchrun.dispatch.progress import RunCounters
from batchrun.dispatch.recording import Recorder
from batchrun.media.files import media_root_for

# Shards a worker holds at once: the next one is read while the last rows of one are sent.
SHARDS_AHEAD = 2


class WorkersLostError(FatalError):
    code = "workers_lost"
    error_type = "cluster_error"
    advice = "check the Ray cluster (`ray status`), then resume"


@dataclass(frozen=True)
class ClusterOptions:
    """How a run goes wide: ``--ray-address``, ``--workers`` and the CPUs each one takes."""

    address: str | None = None
    workers: int = 2
    worker_cpus: float = 1.0
    shard_rows: int | None = None  # None: four times the concurrency
    # A worker not started by then (the cluster has no free CPU for it) is left out.
    start_timeout_s: float = 60.0

    def shard_size(self, concurrency: int) -> int:
        return self.shard_rows or max(64, 4 * concurrency)


class ClusterRun:
    """One run on a cluster; create, then ``await run()``."""

    def __init__(self, plan: RunPlan, options: ClusterOptions, runtime: RayRuntime) -> None:
        self.plan = plan
        self.options = options
        self.runtime = runtime
        job = plan.job
        self.counters = RunCounters(rows_total=plan.rows_total,
                                    estimate_credits=plan.estimate_credits)
        self.counters.rows_skipped = plan.index.count_done(retry_failed=plan.retry_failed)
        price = price_for(job.model, {job.model: job.price} if job.price else None)
        self.recorder = Recorder(
            plan.run_dir, endpoint=plan.key_endpoint or plan.endpoint, api_key=plan.api_key,
            price=price, counters=self.counters, stop=self.stop,
            breaker=CircuitBreaker(job.breaker_first, job.breaker_window, job.breaker_rate))
        self.book = ShardBook(plan.index.done_lines(retry_failed=plan.retry_failed),
                              options.shard_size(job.concurrency))
        self.stopping = False
        self.stop_reason: str | None = None
        self.stop_error: BatchrunError | None = None
        self.live: dict[str, Any] = {}
        self.seen: dict[str, WorkerReport] = {}  # each worker's latest counters
        self.rate_text = "leased from the run's governor"
        self.counters.describe_rate = lambda: self.rate_text
        self.governor: Any = None
        self.lost = 0
        self.engine: dict[str, Any] | None = None
        self.workers_started = 0
        self.started_at = time.monotonic()

    def stop(self, reason: str, error: BatchrunError | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_error = reason, error
        if not self.stopping:
            self.stopping = True
            for handle in self.live.values():
                handle.stop.remote(reason)

    async def run(self) -> RunOutcome:
        plan, job = self.plan, self.plan.job
        key = run_key(str(plan.run_dir.path))
        ledger = plan.budget
        self.governor = self.runtime.governor(
            key, rpm=job.rpm, tpm=job.tpm, cap=ledger.cap if ledger else None,
            spent=ledger.spent if ledger else 0.0)
        # Absolute: a worker's working directory is not the driver's.
        media_root = media_root_for(plan.manifest, plan.media_root or job.media_root).resolve()
        specs = [WorkerSpec(f"batchrun-worker-{key}-{n}", plan.manifest.resolve(), job,
                            plan.endpoint, media_root, plan.key_endpoint, ledger,
                            plan.reuse.run_path.resolve() if plan.reuse else None)
                 for n in range(self.options.workers)]
        handles = self.runtime.workers(specs, self.governor, cpus=self.options.worker_cpus)
        await self._start([spec.name for spec in specs], handles)
        self.workers_started = len(self.live)
        plan.run_dir.open_journal()
        self.started_at = time.monotonic()  # lease calls per second: of dispatch, not start-up
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(watch_interrupts, self, outer.cancel_scope, plan.notice)
                outer.start_soon(sync_journal, plan.run_dir, self)
                if plan.progress is not None:
                    outer.start_soon(plan.progress, self.counters)
                async with anyio.create_task_group() as drivers:
                    for name, handle in list(self.live.items()):
                        drivers.start_soon(self._drive, name, handle)
                outer.cancel_scope.cancel()
            governed = await self.governor.summary.remote()
            self._settle_budget(governed)
            self.engine = self._engine_stats(governed)
        finally:
            self.recorder.flush()
            plan.run_dir.close_journal()
        return RunOutcome(counters=self.counters, stop_reason=self.stop_reason,
                          stop_error=self.stop_error, rows_pending=self.counters.rows_pending,
                          engine=self.engine)

    async def _start(self, names: list[str], handles: list[Any]) -> None:
        """Start the workers together; one the cluster cannot place (no free CPU) or that dies
        starting is left out, with a word; none at all is an error."""
        async def start(name: str, handle: Any) -> None:
            with anyio.move_on_after(self.options.start_timeout_s):
                try:
                    await handle.start.remote(self.plan.api_key)
                except Exception as error:
                    if not self.runtime.is_lost(error):
                        raise
                    return
                self.live[name] = handle

        async with anyio.create_task_group() as group:
            for name, handle in zip(names, handles, strict=True):
                group.start_soon(start, name, handle)
        left_out = [name for name in names if name not in self.live]
        for name, handle in zip(names, handles, strict=True):
            if name in left_out:
                self.runtime.kill(handle)
        if not self.live:
            raise InputError(
                f"none of the {len(names)} dispatch workers started within "
                f"{self.options.start_timeout_s:g} s: each takes {self.options.worker_cpus:g} "
                "CPU of the Ray cluster (`ray status` shows what is free)")
        if left_out and self.plan.notice is not None:
            self.plan.notice(
                f"{len(left_out)} of {len(names)} dispatch workers did not start within "
                f"{self.options.start_timeout_s:g} s (no free CPU on the cluster?): going on "
                f"with {len(self.live)}")

    async def _drive(self, name: str, handle: Any) -> None:
        """Keep one worker fed with shards and journal what it finishes, until it ends."""
        closed = False
        book = self.book
        while True:
            try:
                if not self.stopping:
                    while book.holding(name) < SHARDS_AHEAD and (shard := book.take(name)):
                        await handle.add_shard.remote(shard)
                    if book.all_done and not closed:
                        closed = True
                        await handle.close.remote()
                report: WorkerReport = await handle.collect.remote()
            except Exception as error:
                if not self.runtime.is_lost(error):
                    raise
                self._lose(name)
                return
            self._take(name, report)
            if report.finished:
                self.live.pop(name, None)
                return

    def _take(self, name: str, report: WorkerReport) -> None:
        recorder, book = self.recorder, self.book
        for kind, result in report.results:
            if kind == KIND_ROW:
                recorder.keep(result)
                if result.line is not None:
                    book.finish(result.line)
            else:
                recorder.keep_try(result)
        for number, reached_end in report.shards_done:
            book.shard_done(name, number, reached_end)
        self.seen[name] = report
        self._sum_counters()
        if report.rate_text:
            self.rate_text = report.rate_text
        if report.budget_refused is not None and self.plan.budget is not None:
            self.plan.budget.refused = report.budget_refused
        if report.stop_reason is not None and not self.stopping:
            self.stop(report.stop_reason, report.stop_error)

    def _lose(self, name: str) -> None:
        """A worker died: its shards go to the others, its allowance counts as spent."""
        self.live.pop(name, None)
        self.seen.pop(name, None)
        self._sum_counters()
        self.lost += 1
        self.book.lose(name)
        self.governor.forget.remote(name)
        if self.plan.notice is not None:
            self.plan.notice(f"dispatch worker {name} was lost; its unfinished rows go to "
                             f"the others ({len(self.live)} left)")
        if not self.live and not self.stopping and not self.book.all_done:
            self.stop(STOP_FATAL, WorkersLostError(
                f"all {self.options.workers} dispatch workers were lost"))

    def _sum_counters(self) -> None:
        counters, reports = self.counters, self.seen.values()
        counters.in_flight = sum(r.in_flight for r in reports)
        counters.waiting = sum(r.waiting for r in reports)
        counters.requests_sent = sum(r.requests_sent for r in reports)

    def _settle_budget(self, summary: dict[str, Any]) -> None:
        """The cap's ledger on the driver learns what the cluster spent (for the summary
        and the resume advice)."""
        ledger = self.plan.budget
        if ledger is None:
            return
        ledger.spent = float(summary["spent"])
        ledger.reserved, ledger.in_flight = 0.0, 0
        if summary["refused"] is not None and ledger.refused is None:
            ledger.refused = float(summary["refused"])
        if self.stop_reason == STOP_BUDGET and ledger.refused is None:
            ledger.refused = 0.0

    def _engine_stats(self, summary: dict[str, Any]) -> dict[str, Any]:
        seconds = time.monotonic() - self.started_at
        return {"name": "ray", "workers": self.options.workers,
                "workers_started": self.workers_started, "workers_lost": self.lost,
                "shard_rows": self.book.size, "seconds": round(seconds, 3),
                "lease_calls": summary["asks"],
                "lease_calls_per_s": round(summary["asks"] / seconds, 2) if seconds else 0.0,
                "rate_limited": summary["refusals"]}


def connect(options: ClusterOptions) -> RayRuntime:
    """Join (or start) Ray, in the main thread, before the run's event loop starts."""
    return RayRuntime.connect(options.address, workers=options.workers,
                              worker_cpus=options.worker_cpus)


async def execute_on_cluster(
    plan: RunPlan, options: ClusterOptions, runtime: RayRuntime, *,
    before_dispatch: Callable[[ApiClient], Awaitable[None]] | None = None,
) -> RunOutcome:
    """``dispatch.runner.execute`` on a Ray cluster: the balance check on the driver, then the
    run; the run's actors are removed however it ends (``runtime.close``)."""
    if before_dispatch is not None:
        settings = ClientSettings(endpoint=plan.endpoint, api_key=plan.api_key,
                                  max_connections=1)
        async with ApiClient(settings) as client:
            await before_dispatch(client)
    try:
        return await ClusterRun(plan, options, runtime).run()
    finally:
        runtime.close()
