"""``batchrun run``: send a manifest, then render what the run did and exit with its code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batchrun.cli.common import ClickConsole, emit_json, err, start_emulator
from batchrun.cli.exit_codes import run_exit_code
from batchrun.cli.key_hint import api_key_hint
from batchrun.cli.options import run_options
from batchrun.cost.budget import CreditLedger, cap_reached_lines
from batchrun.dispatch.plan import STOP_BUDGET, RunOutcome
from batchrun.plan.options import RunOptions
from batchrun.plan.running import RunReport, run_job
from batchrun.reporting.incomplete import incomplete_lines
from batchrun.reporting.status import run_retry_lines
from batchrun.store.summary import RunSummary


@click.command(
    epilog="""\b
Examples:
  batchrun run sample_inputs/sample.jsonl --job jobs/sample.toml --out runs/sample --emulate
  BATCHRUN_API_KEY=sk-... batchrun run corpus.parquet --job jobs/summarise.toml \\
      --out runs/night1 --concurrency 64 --rpm 600 --max-credits 5000
  batchrun run corpus.parquet --out runs/night1      # same RUN_DIR again: resumes
  batchrun run corpus.parquet --out runs/night2 --calibrate 50 --max-credits 2000
"""
)
@run_options
def run(**params: Any) -> None:
    """Send every row of MANIFEST (JSONL or Parquet) and write OUT/results.parquet.

    A cost estimate is shown before anything is sent. Rows already done in OUT are never
    sent again; a fatal API answer or Ctrl-C stops cleanly and prints the resume command.
    """
    options = RunOptions(**params)
    console = ClickConsole(quiet=options.quiet, progress_every=options.progress_every)
    report = run_job(options, console, start_emulator)
    render_run(report, options.out, quiet=options.quiet, as_json=options.as_json)
    if report.summary.resume_command and (
            hint := api_key_hint(options.api_key, emulate=options.emulate)):
        err(hint)
    sys.exit(exit_code(report.outcome, report.summary))


def render_run(report: RunReport, out: Path, *, quiet: bool, as_json: bool) -> None:
    """The summary (unless --quiet, but always when the run stopped), the warnings about money
    and lost answers (always), and the final status as JSON with --json."""
    outcome, summary = report.outcome, report.summary
    if not quiet or outcome.stop_reason is not None:
        print_summary(summary, outcome, out, ledger=report.ledger)
    print_warnings(outcome)
    if as_json:
        emit_json({**summary.as_dict(), "stop_reason": outcome.stop_reason,
                   **({"engine": outcome.engine} if outcome.engine else {})})


def exit_code(outcome: RunOutcome, summary: RunSummary) -> int:
    """The run's exit code: why it stopped, else the whole run directory's rows."""
    return run_exit_code(outcome.stop_reason, rows_failed=summary.rows_failed,
                         rows_pending=summary.rows_pending)


def print_warnings(outcome: RunOutcome) -> None:
    """Warnings about money and lost answers: printed even with --quiet."""
    counters = outcome.counters
    if counters.missing_usage:
        err(f"warning: {counters.missing_usage:,} answers came without usage; their tokens and "
            "cost are unknown (rows flagged error_code=missing_usage, status ok); a server that "
            "sends usage on a stream only when asked is asked by the job's "
            'stream_usage = "ask"')
    if counters.answers_unrecorded:
        err(f"warning: {counters.answers_unrecorded:,} answers arrived but could not be "
             "written; those rows stay pending and will be sent (and paid) again on resume")


def print_summary(summary: RunSummary, outcome: RunOutcome, run_dir: Path, *,
                   ledger: CreditLedger | None = None) -> None:
    err(
        f"done: {summary.rows_ok:,} ok · {summary.rows_failed:,} failed · "
        f"{summary.rows_pending:,} pending of {summary.rows_total:,} rows"
    )
    err(
        f"tokens: prompt {summary.prompt_tokens:,} · completion {summary.completion_tokens:,} · "
        f"reasoning {summary.reasoning_tokens:,} (not billed)"
    )
    err(f"spent: {summary.credits:,.6f} credits (${summary.usd:,.6f})")
    if summary.rows_reused:
        err(f"reused: {summary.rows_reused:,} answers of an earlier run (not paid again)")
    if summary.errors_by_code:
        errors = ", ".join(f"{code} ×{count}" for code, count in summary.errors_by_code.items())
        err(f"errors: {errors}")
    for line in [*run_retry_lines(run_dir),
                 *incomplete_lines(summary.finish_reasons, summary.redo_command)]:
        err(line)
    err(f"results: {run_dir / 'results.parquet'}")
    error = outcome.stop_error
    if error is not None:
        advice = getattr(error, "advice", "fix the cause, then resume")
        done = summary.rows_ok + summary.rows_failed
        err(
            f"stopped: {error} after {done:,} of {summary.rows_total:,} rows; {advice}:\n"
            f"  {summary.resume_command}"
        )
    elif outcome.stop_reason == STOP_BUDGET and ledger is not None:
        done = summary.rows_ok + summary.rows_failed
        per_row = summary.credits / done if done else 0.0
        for line in cap_reached_lines(ledger, rows_pending=summary.rows_pending,
                                      credits_per_row=per_row,
                                      resume_command=summary.resume_command or ""):
            err(line)
    elif outcome.stop_reason is not None:
        err(f"stopped ({outcome.stop_reason}); to resume:\n  {summary.resume_command}")
    elif summary.rows_failed:
        err(f"to send the failed rows again: {summary.resume_command} --retry-failed")
