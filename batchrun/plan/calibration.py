"""``--calibrate N``: pick the sample, send it through the runner into RUN_DIR, fit, project.

The sample is sent like any rows of the run: journaled in RUN_DIR, so the run that follows
(same RUN_DIR) treats them as done and never pays for them again, and a later calibration
with the same N finds them there and sends nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchrun.api.client import ApiClient
from batchrun.core.errors import RowError
from batchrun.core.result import record_credits
from batchrun.cost.calibrate import (
    CalibrationFit,
    SampleRow,
    fit,
    project,
    report_lines,
    sample_positions,
    spent_estimate,
)
from batchrun.cost.catalog import Price
from batchrun.cost.estimate import (
    KindEstimate,
    RunEstimate,
    Tally,
    assumed_estimate,
    estimate_lines,
)
from batchrun.cost.schema_retries import SchemaRetries
from batchrun.cost.tokens import RowEstimate
from batchrun.dispatch.eventloop import run_dispatch
from batchrun.dispatch.plan import RunOutcome, RunPlan
from batchrun.dispatch.runner import execute
from batchrun.dispatch.structured import SCHEMA_ERROR
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver, media_root_for
from batchrun.plan.preflight import Preflight, estimate_of
from batchrun.plan.session import Session, balance_check
from batchrun.store.index import JournalIndex
from batchrun.store.rundir import RunDir

_STATE_FIELDS = ("status", "retryable", "prompt_tokens", "completion_tokens", "credits",
                 "credits_computed", "reused_from")


@dataclass(frozen=True)
class RowState:
    """What RUN_DIR's journal says of one row (its latest line)."""

    ok: bool
    retryable: bool
    prompt_tokens: int
    completion_tokens: int
    credits: float

    def done(self, *, retry_failed: bool) -> bool:
        return self.ok or not (self.retryable or retry_failed)


def row_states(run_dir: RunDir) -> dict[str, RowState]:
    """id → its latest state; a reused answer paid nothing here."""
    states: dict[str, RowState] = {}
    for row_id, record in run_dir.latest_records(_STATE_FIELDS).items():
        reused = record.get("reused_from") is not None
        states[row_id] = RowState(
            ok=record.get("status") == "ok",
            retryable=bool(record.get("retryable")),
            prompt_tokens=0 if reused else record.get("prompt_tokens") or 0,
            completion_tokens=0 if reused else record.get("completion_tokens") or 0,
            credits=0.0 if reused else record_credits(record),
        )
    return states


def preflight_estimator(plan: RunPlan) -> Callable[[Row], RowEstimate]:
    """A row's estimate as the preflight made it (its request built: the schema's text, the
    media files' own pages and pixels): the sample's ratio of real to estimated tokens then
    scales the very figures the preflight summed for the rows still to send."""
    media = MediaResolver(media_root_for(plan.manifest, plan.job.media_root),
                          max_file_bytes=plan.job.max_file_bytes)

    def estimate(row: Row) -> RowEstimate:
        try:
            return estimate_of(row, plan.job, media)
        except RowError:  # a file gone since the preflight: the documented defaults
            return estimate_of(row, plan.job)

    return estimate


@dataclass
class SamplePick:
    rows: list[Row]  # the sample, in manifest order
    spent_by_kind: dict[str, KindEstimate] = field(default_factory=dict)  # rows paid earlier


def pick_sample(plan: RunPlan, rows_sendable: int, sample_size: int) -> SamplePick:
    """One pass: the sendable rows at the sample's positions, and what rows already answered
    in RUN_DIR really cost, by kind."""
    positions = iter(sample_positions(rows_sendable, sample_size))
    wanted = next(positions, None)
    pick = SamplePick(rows=[])
    states = row_states(plan.run_dir)
    estimate = preflight_estimator(plan)
    position = 0
    for row in iter_rows(plan.manifest, plan.job, check_duplicates=False):
        if row.error is not None:
            continue
        state = states.get(row.id)
        if state is not None and state.ok:
            _add_spent(pick.spent_by_kind, estimate(row).kind, state)
        if position == wanted:
            pick.rows.append(row)
            wanted = next(positions, None)
        position += 1
    return pick


def _add_spent(by_kind: dict[str, KindEstimate], kind: str, state: RowState) -> None:
    totals = by_kind.setdefault(kind, KindEstimate())
    totals.rows += 1
    totals.prompt_tokens += state.prompt_tokens
    totals.output_tokens += state.completion_tokens
    totals.credits += state.credits


@dataclass
class Calibration:
    """What ``--calibrate`` found and what it projects for the rest of the run."""

    fit: CalibrationFit | None
    sent: int
    reused: int
    failed: int
    outcome: RunOutcome | None  # of sending the sample; None when nothing had to be sent
    remaining: RunEstimate | None  # calibrated estimate of the rows still to send
    spent: RunEstimate  # every row already answered in RUN_DIR, at its billed cost
    index: JournalIndex  # RUN_DIR's journal after the sample
    # Sample rows with a JSON Schema: the tries asked again, and what the rows still to send
    # are expected to need (part of ``whole_run``).
    schema_retries: SchemaRetries | None = None
    retries_remaining: RunEstimate | None = None

    @property
    def whole_run(self) -> RunEstimate | None:
        if self.remaining is None:
            return None
        whole = self.spent.plus(self.remaining)
        return whole.plus(self.retries_remaining) if self.retries_remaining else whole


@dataclass
class SamplePlan:
    pick: SamplePick
    to_send: list[Row]  # sample rows not answered yet in RUN_DIR
    estimate: RunEstimate  # the uncalibrated estimate of sending them

    @property
    def reused(self) -> int:
        return len(self.pick.rows) - len(self.to_send)


def plan_sample(plan: RunPlan, preflight: Preflight, sample_size: int, price: Price) -> SamplePlan:
    """Pick the sample (one pass over the manifest) and price what is left to send of it."""
    # Positions over every sendable row of the manifest (the preflight of a resume reads only
    # the pending rows), so the same N picks the same rows whatever is done already.
    sendable = sum(1 for row in iter_rows(plan.manifest, plan.job, check_duplicates=False)
                   if row.error is None)
    pick = pick_sample(plan, sendable, sample_size)
    to_send = [row for row in pick.rows
               if not plan.index.is_done_row(row, retry_failed=plan.retry_failed)]
    tally = Tally()
    estimate = preflight_estimator(plan)
    for row in to_send:
        tally.add(estimate(row))
    return SamplePlan(pick, to_send, assumed_estimate(tally, plan.job.expected_output_tokens,
                                                      price))


def send_sample(
    plan: RunPlan,
    sample: SamplePlan,
    *,
    before_dispatch: Callable[[ApiClient], Awaitable[None]] | None = None,
) -> RunOutcome | None:
    """Send the sample rows not yet answered, journaled in RUN_DIR (prepared by the caller)."""
    if not sample.to_send:
        return None
    sample_plan = dataclasses.replace(plan, only_rows=tuple(sample.to_send))

    async def send() -> RunOutcome:
        return await execute(sample_plan, before_dispatch=before_dispatch)

    return run_dispatch(send)


def conclude(
    plan: RunPlan,
    preflight: Preflight,
    sample: SamplePlan,
    outcome: RunOutcome | None,
    price: Price,
) -> Calibration:
    """Read the sample's answers from RUN_DIR, fit, and project the rows still to send."""
    index = plan.run_dir.load_index()
    states = row_states(plan.run_dir)
    pick = sample.pick
    sent_ids = {row.id for row in sample.to_send}
    answered: list[SampleRow] = []
    sent_now = Tally()
    failed = 0
    estimate_row = preflight_estimator(plan)
    for row in pick.rows:
        state = states.get(row.id)
        estimate = estimate_row(row)
        if row.id in sent_ids and index.is_done_row(row, retry_failed=False):
            sent_now.add(estimate)
            if state is not None and state.ok:
                _add_spent(pick.spent_by_kind, estimate.kind, state)
        if state is None or not state.ok:
            failed += state is not None
            continue
        if state.prompt_tokens <= 0:
            continue  # answered without usage: teaches nothing about tokens
        answered.append(SampleRow(kind=estimate.kind, estimated_prompt=estimate.prompt_tokens,
                                  prompt_tokens=state.prompt_tokens,
                                  completion_tokens=state.completion_tokens,
                                  credits=state.credits))

    calibration = fit(answered)
    remaining_tally = preflight.tally.minus(sent_now)
    remaining = project(calibration, remaining_tally, price) if calibration else None
    retries = schema_retries(plan.run_dir, pick.rows, states)
    retries_remaining = (retries.projected(remaining.rows_sendable, price)
                         if retries is not None and remaining is not None else None)
    done = [state for state in states.values() if state.done(retry_failed=plan.retry_failed)]
    ok_rows = [state for state in done if state.ok]
    spent = spent_estimate(
        rows=len(done),
        prompt_tokens=sum(state.prompt_tokens for state in ok_rows),
        output_tokens=sum(state.completion_tokens for state in ok_rows),
        credits=index.credits,
        price=price,
        by_kind=pick.spent_by_kind,
    )
    return Calibration(
        fit=calibration,
        sent=len(sample.to_send),
        reused=sample.reused,
        failed=failed,
        outcome=outcome,
        remaining=remaining,
        spent=spent,
        index=index,
        schema_retries=retries,
        retries_remaining=retries_remaining,
    )


def schema_retries(run_dir: RunDir, sample: list[Row],
                   states: dict[str, RowState]) -> SchemaRetries | None:
    """The tries of the sample's rows that were asked again because the answer did not fit
    the schema (their journal lines), over the sample rows sent; None when no sample row has
    a schema."""
    if not any(row.output_schema is not None for row in sample):
        return None
    ids = {row.id for row in sample}
    tries, credits, prompt, completion = 0, 0.0, 0, 0
    for record in run_dir.journal_records():
        if (record["id"] in ids and record.get("error_code") == SCHEMA_ERROR
                and record.get("retryable")):
            tries += 1
            credits += record_credits(record)
            prompt += record.get("prompt_tokens") or 0
            completion += record.get("completion_tokens") or 0
    return SchemaRetries(rows=sum(row.id in states for row in sample), tries=tries,
                         credits=credits, prompt_tokens=prompt, completion_tokens=completion)


def default_run_dir(manifest: Path, fingerprint: str, job: JobSpec, endpoint: str) -> Path:
    """Where ``estimate --calibrate`` keeps its sample when no --out is given.

    ``runs/<manifest stem>-<hash>``: the hash covers the manifest's bytes, every job field that
    shapes a request, and the endpoint, so a changed job or endpoint never finds answers it did
    not ask for, and the same command finds its own sample again.
    """
    shaping = {name: job.describe()[name] for name in REQUEST_FIELDS}
    key = orjson.dumps([fingerprint, shaping, endpoint], option=orjson.OPT_SORT_KEYS)
    return Path("runs") / f"{manifest.stem}-{hashlib.sha256(key).hexdigest()[:8]}"


REQUEST_FIELDS = ("model", "stream", "include_thoughts", "reasoning_effort", "google_search",
                  "system", "prompt_template", "media_columns", "extra_body")


def calibrate_in_session(session: Session, plan: RunPlan, sample_size: int, *, threshold: float,
                         ask: bool, ignore_balance: bool) -> Calibration:
    """Send the sample (asking first if it alone is above the threshold), show its real cost,
    then the calibrated estimate."""
    console, preflight, price = session.console, session.preflight, session.price
    sample = plan_sample(plan, preflight, sample_size, price)
    sample_cost = sample.estimate.credits.high
    console.info(f"calibration: {len(sample.pick.rows)} sample rows spread over the manifest, "
                 f"{len(sample.to_send)} to send (≈ {sample.estimate.credits.expected:,.4f} "
                 f"credits, at most ≈ {sample_cost:,.4f}), {sample.reused} already in "
                 f"{plan.run_dir.path}")
    session.confirm(sample_cost, threshold, ask=ask, what="the calibration sample")
    outcome = send_sample(plan, sample, before_dispatch=balance_check(
        sample_cost, ignore_balance, warn=console.warn))
    if outcome is not None:
        console.end_progress()
    calibration = conclude(plan, preflight, sample, outcome, price)
    if calibration.fit is None:
        console.warn("calibration: no sample row was answered with usage; the estimate stays "
                     "uncalibrated")
        return calibration
    for line in report_lines(calibration.fit, price, sent=calibration.sent,
                             reused=calibration.reused, failed=calibration.failed):
        console.info(line)
    whole = calibration.whole_run
    assert whole is not None and calibration.remaining is not None
    console.info("calibrated estimate for the whole run (rows already answered at their real "
                 "cost):")
    for line in estimate_lines(whole, rows_total=preflight.rows_total, label="sendable rows"):
        console.info(line)
    if calibration.schema_retries is not None:
        console.info(calibration.schema_retries.line(calibration.remaining.rows_sendable, price))
    return calibration
