"""The ``batchrun`` command: flags and job file → JobSpec → runner; exit codes.

Exit codes: 0 all rows ok · 1 finished, some rows failed · 2 bad usage or input ·
3 stopped by a fatal API answer · 4 stopped at the budget cap · 130 interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from batchrun import __version__
from batchrun.api.client import ApiClient
from batchrun.api.endpoint_check import plain_http_warning
from batchrun.cli.options import job_overrides, resume_flags, run_options
from batchrun.core.errors import BatchrunError, InputError
from batchrun.cost.budget import CreditLedger, budget_lines, cap_reached_lines, suggested_cap
from batchrun.cost.calibrate import as_dict as calibration_dict
from batchrun.cost.calibrate import report_lines
from batchrun.cost.catalog import Price, price_for
from batchrun.cost.estimate import estimate_lines
from batchrun.dispatch.eventloop import run_dispatch
from batchrun.dispatch.runner import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_USAGE,
    STOP_BUDGET,
    RunOutcome,
    RunPlan,
    execute,
    finish,
)
from batchrun.manifest.job import JobSpec, load_job
from batchrun.manifest.reader import manifest_fingerprint
from batchrun.plan.calibration import (
    Calibration,
    conclude,
    default_run_dir,
    plan_sample,
    send_sample,
)
from batchrun.plan.diskspace import check_free_space
from batchrun.plan.preflight import Preflight, scan_manifest
from batchrun.plan.resume import open_reuse, open_run, reuse_predicate
from batchrun.store.index import JournalIndex
from batchrun.store.records import STATE_OK
from batchrun.store.rundir import RunDir, run_info
from batchrun.store.summary import RunSummary

API_KEY_ENV = "BATCHRUN_API_KEY"
EMULATOR_KEY = "sk-batchrun-emulator"
DEFAULT_CONFIRM_ABOVE = 1000.0  # credits ($5): above this, a run asks first


def _err(message: str) -> None:
    click.echo(message, err=True)


def _emit_json(data: dict[str, Any]) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


class BatchrunGroup(click.Group):
    """Turns batchrun's own errors into a message and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            _err(f"error: {exc.message}")
            ctx.exit(EXIT_USAGE)
        except BatchrunError as exc:
            _err(f"error: {exc}")
            ctx.exit(EXIT_FATAL)


@click.group(
    cls=BatchrunGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  batchrun estimate sample_inputs/sample.jsonl --job jobs/sample.toml
  batchrun run sample_inputs/sample.jsonl --job jobs/sample.toml --out runs/sample --emulate
  BATCHRUN_API_KEY=sk-... batchrun run corpus.jsonl --job jobs/summarise.toml --out runs/night1
  batchrun status runs/night1
  batchrun export runs/night1 --output answers.jsonl

Exit codes: 0 all rows ok, 1 some rows failed, 2 bad usage or input, 3 stopped by a fatal
API answer (401/402/403/404/spend limit), 4 stopped at the budget cap, 130 interrupted.""",
)
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Push a manifest of prompts, documents and media through an OpenAI-compatible
    /v1/chat/completions API (the Gemini 3.1 Pro gateway first), with a cost estimate
    before anything is spent, resumable runs and results in Parquet."""


# --- shared helpers ------------------------------------------------------------------------
def _load_spec(job_file: Path | None, **overrides: Any) -> JobSpec:
    spec = load_job(job_file)
    if job_file is not None and spec.name == "job":
        overrides.setdefault("name", job_file.stem)
    spec = spec.with_overrides(**overrides)
    spec.validate()
    return spec


def _check_manifest(manifest: Path) -> None:
    if not manifest.exists():
        raise InputError(f"manifest not found: {manifest}")
    if manifest.is_dir():
        raise InputError(f"manifest is a directory, not a file: {manifest}")


def _print_estimate(preflight: Preflight, *, heading: str) -> None:
    _err(heading)
    for line in estimate_lines(preflight.to_send, rows_total=preflight.rows_total):
        _err(line)


def _resume_command(manifest: Path, out: Path, flags: dict[str, Any]) -> str:
    """The command line that resumes this run: the same flags, never the API key."""
    parts = ["batchrun", "run", str(manifest), "--out", str(out)]
    for flag, value in flags.items():
        if value is None or value is False:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


@contextlib.contextmanager
def _endpoint_for(emulate: bool, endpoint: str | None) -> Iterator[str | None]:
    """Start the embedded emulator for --emulate and yield its address."""
    if not emulate:
        yield endpoint
        return
    from batchrun.emulator.server import EmulatorServer

    with EmulatorServer() as server:
        yield server.base_url


def _exit_code(outcome: RunOutcome, summary: RunSummary) -> int:
    if outcome.stop_reason is not None:
        return outcome.exit_code
    return EXIT_ROWS_FAILED if (summary.rows_failed or summary.rows_pending) else EXIT_OK


def _print_warnings(outcome: RunOutcome) -> None:
    """Warnings about money and lost answers: printed even with --quiet."""
    counters = outcome.counters
    if counters.missing_usage:
        _err(f"warning: {counters.missing_usage:,} answers came without usage; their tokens and "
             "cost are unknown (rows flagged error_code=missing_usage, status ok)")
    if counters.answers_unrecorded:
        _err(f"warning: {counters.answers_unrecorded:,} answers arrived but could not be "
             "written; those rows stay pending and will be sent (and paid) again on resume")


def _print_summary(summary: RunSummary, outcome: RunOutcome, run_dir: Path, *,
                   ledger: CreditLedger | None = None) -> None:
    _err(
        f"done: {summary.rows_ok:,} ok · {summary.rows_failed:,} failed · "
        f"{summary.rows_pending:,} pending of {summary.rows_total:,} rows"
    )
    _err(
        f"tokens: prompt {summary.prompt_tokens:,} · completion {summary.completion_tokens:,} · "
        f"reasoning {summary.reasoning_tokens:,} (not billed)"
    )
    _err(f"spent: {summary.credits:,.6f} credits (${summary.usd:,.6f})")
    if summary.rows_reused:
        _err(f"reused: {summary.rows_reused:,} answers of an earlier run (not paid again)")
    if summary.errors_by_code:
        errors = ", ".join(f"{code} ×{count}" for code, count in summary.errors_by_code.items())
        _err(f"errors: {errors}")
    _err(f"results: {run_dir / 'results.parquet'}")
    error = outcome.stop_error
    if error is not None:
        advice = getattr(error, "advice", "fix the cause, then resume")
        done = summary.rows_ok + summary.rows_failed
        _err(
            f"stopped: {error} after {done:,} of {summary.rows_total:,} rows; {advice}:\n"
            f"  {summary.resume_command}"
        )
    elif outcome.stop_reason == STOP_BUDGET and ledger is not None:
        done = summary.rows_ok + summary.rows_failed
        per_row = summary.credits / done if done else 0.0
        for line in cap_reached_lines(ledger, rows_pending=summary.rows_pending,
                                      credits_per_row=per_row,
                                      resume_command=summary.resume_command or ""):
            _err(line)
    elif outcome.stop_reason is not None:
        _err(f"stopped ({outcome.stop_reason}); to resume:\n  {summary.resume_command}")
    elif summary.rows_failed:
        _err(f"to send the failed rows again: {summary.resume_command} --retry-failed")


# --- run -----------------------------------------------------------------------------------
@cli.command(
    epilog="""\b
Examples:
  batchrun run sample_inputs/sample.jsonl --job jobs/sample.toml --out runs/sample --emulate
  BATCHRUN_API_KEY=sk-... batchrun run corpus.parquet --job jobs/summarise.toml \\
      --out runs/night1 --concurrency 64 --rpm 600 --max-credits 5000
  batchrun run corpus.parquet --out runs/night1      # same RUN_DIR again: resumes
  batchrun run corpus.parquet --out runs/night2 --calibrate 50 --max-credits 2000
"""
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Run directory (journal, results.parquet). An existing run of the same "
              "manifest is resumed.")
@click.option("--job", "job_file", type=click.Path(path_type=Path),
              help="Job spec TOML (model, prompt template, reasoning, limits …).")
@click.option("--endpoint", help="API base URL [env BATCHRUN_ENDPOINT; default "
              "https://api.aivideoapi.ai/v1].")
@click.option("--api-key", help=f"API key [env {API_KEY_ENV}]; never written anywhere.")
@click.option("--concurrency", type=click.IntRange(1, 4096),
              help="Requests in flight at once [job spec, default 32].")
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True),
              help="Requests per minute limit.")
@click.option("--tpm", type=click.FloatRange(min=0, min_open=True),
              help="Tokens per minute limit (estimated prompt + expected output).")
@click.option("--max-credits", type=click.FloatRange(min=0, min_open=True),
              help="Budget cap in credits: stop dispatch (exit 4) before spending more.")
@click.option("--confirm-above", type=click.FloatRange(min=0),
              help=f"Ask before a run estimated above this many credits "
              f"[default {DEFAULT_CONFIRM_ABOVE:g}].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--emulate", is_flag=True,
              help="Run against the embedded API emulator on 127.0.0.1 (no key, no network).")
@click.option("--retry-failed", is_flag=True,
              help="On resume, also send again rows that ended in a final error.")
@click.option("--ignore-balance", is_flag=True,
              help="Start even when GET /credits says the balance is below the estimate.")
@click.option("--calibrate", type=click.IntRange(min=1),
              help="Send N sample rows spread over the manifest first, show their real cost "
              "and calibrate the estimate on them; they count as done for the run.")
@click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
              help="Folder that local media paths are confined to [manifest's folder].")
@click.option("--media-budget", type=click.IntRange(min=1),
              help="Bytes of request bodies (media base64 included) in flight at once; a "
              "row waits for room before its files are read [job spec, default 256 MiB].")
@click.option("--reuse", type=click.Path(path_type=Path, file_okay=False),
              help="Earlier run directory: rows whose request (endpoint, model, body, media "
              "bytes) it answered ok are copied from it, not sent (nor paid) again.")
@click.option("--quiet", "-q", is_flag=True, help="No estimate or progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON on stdout.")
@run_options
@click.option("--progress-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between plain progress lines when stderr is not a terminal.")
def run(
    manifest: Path,
    out: Path,
    job_file: Path | None,
    endpoint: str | None,
    api_key: str | None,
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    max_credits: float | None,
    confirm_above: float | None,
    yes: bool,
    emulate: bool,
    retry_failed: bool,
    ignore_balance: bool,
    calibrate: int | None,
    media_root: Path | None,
    media_budget: int | None,
    reuse: Path | None,
    quiet: bool,
    as_json: bool,
    progress_every: float,
) -> None:
    """Send every row of MANIFEST (JSONL or Parquet) and write OUT/results.parquet.

    A cost estimate is shown before anything is sent. Rows already done in OUT are never
    sent again; a fatal API answer or Ctrl-C stops cleanly and prints the resume command.
    """
    _check_manifest(manifest)
    spec = _load_spec(
        job_file,
        endpoint=endpoint,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        max_credits=max_credits,
        confirm_above=confirm_above,
        media_root=str(media_root) if media_root else None,
        media_budget_bytes=media_budget,
        **job_overrides(),
    )
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key and not emulate:
        raise InputError(
            f"no API key: set {API_KEY_ENV} or pass --api-key (or --emulate to try it locally)"
        )
    run_dir = RunDir(out)
    fingerprint = manifest_fingerprint(manifest)
    price = price_for(spec.model, {spec.model: spec.price} if spec.price else None)
    flags_to_resume: dict[str, Any] = {
        "--job": job_file, "--endpoint": endpoint, "--emulate": emulate,
        "--concurrency": concurrency, "--rpm": rpm, "--tpm": tpm, "--max-credits": max_credits,
        "--media-root": media_root, "--media-budget": media_budget, "--reuse": reuse,
        "--yes": yes, **resume_flags(),
    }
    resume_command = _resume_command(manifest, out, flags_to_resume)

    with _endpoint_for(emulate, spec.endpoint) as chosen_endpoint:
        spec = spec.with_overrides(endpoint=chosen_endpoint)
        resolved_endpoint = spec.resolved_endpoint()
        if (insecure := plain_http_warning(resolved_endpoint)) is not None:
            _err(insecure)
        api_key_value = key or EMULATOR_KEY
        created = not out.exists()
        opened = open_run(run_dir, fingerprint, retry_failed=retry_failed)  # locks
        cache = None
        ledger: CreditLedger | None = None
        try:
            cache = open_reuse(reuse, out) if reuse is not None else None
            preflight = scan_manifest(
                manifest, spec, price, is_done=opened.is_done, done_lines=opened.done_lines,
                rows_total=opened.rows_total,
                will_reuse=reuse_predicate(cache, spec, resolved_endpoint) if cache else None,
            )
            if not quiet:
                done = opened.rows_done
                resumed = f" (resuming: {done:,} rows already done)" if opened.resumed else ""
                _print_estimate(preflight, heading=f"estimate for {manifest}{resumed}:")
                if cache is not None:
                    _err(f"  reuse: {preflight.rows_reused:,} rows answered by {reuse} "
                         f"({len(cache):,} answers there; rows with local media are checked "
                         "when sent)")
            threshold = (spec.confirm_above if spec.confirm_above is not None
                         else DEFAULT_CONFIRM_ABOVE)
            expected = preflight.to_send.credits.expected
            ledger = _ledger_for(spec, opened.index)
            if ledger is not None and not quiet:
                for line in budget_lines(ledger, price, expected=expected,
                                         concurrency=spec.concurrency):
                    _err(line)
            if calibrate is None:
                _confirm_spend(expected, threshold, ask=not (yes or emulate))

            run_dir.begin(run_info(
                manifest=manifest, fingerprint=fingerprint, job=spec.describe(),
                endpoint=resolved_endpoint, rows_total=preflight.rows_total,
                resume_command=resume_command,
            ))
            space = check_free_space(out, rows=preflight.to_send.rows,
                                     expected_output_tokens=spec.expected_output_tokens)
            if space is not None:
                _err(space)
            plan = RunPlan(
                manifest=manifest,
                run_dir=run_dir,
                job=spec,
                endpoint=resolved_endpoint,
                api_key=api_key_value,
                rows_total=preflight.rows_total,
                index=opened.index,
                retry_failed=retry_failed,
                media_root=media_root,
                show_progress=not quiet,
                budget=ledger,
                reuse=cache,
                progress_interval_s=progress_every,
                estimate_credits=expected,
            )
            outcome: RunOutcome | None = None
            if calibrate is not None:
                calibration = _calibrate(plan, preflight, calibrate, price, threshold=threshold,
                                         ask=not (yes or emulate), ignore_balance=ignore_balance,
                                         quiet=quiet)
                if calibration.outcome is not None and calibration.outcome.stop_reason:
                    outcome = calibration.outcome
                else:
                    plan = dataclasses.replace(plan, index=calibration.index)
                    if calibration.remaining is not None:
                        expected = calibration.remaining.credits.expected
                    _confirm_spend(expected, threshold, ask=not (yes or emulate),
                                   sample_kept_in=out)
            if outcome is None:
                check = _balance_check(expected, ignore_balance)
                outcome = run_dispatch(lambda: execute(plan, before_dispatch=check))
            if not quiet and sys.stderr.isatty():
                sys.stderr.write("\n")
            if outcome.stop_reason == STOP_BUDGET and ledger is not None:
                index = run_dir.load_index()
                pending = max(0, preflight.rows_total - index.count_done(retry_failed=False))
                per_row = _credits_per_row(index)
                resume_command = _resume_command(manifest, out, {
                    **flags_to_resume,
                    "--max-credits": suggested_cap(ledger, rows_pending=pending,
                                                   credits_per_row=per_row),
                })
            summary = finish(plan, outcome, fingerprint=fingerprint,
                             resume_command=resume_command)
        finally:
            run_dir.release()
            if cache is not None:
                cache.close()
            if created and not run_dir.exists():  # refused before it began: leave no trace
                shutil.rmtree(out, ignore_errors=True)

    if not quiet or outcome.stop_reason is not None:
        _print_summary(summary, outcome, out, ledger=ledger)
    _print_warnings(outcome)
    if as_json:
        _emit_json({**summary.as_dict(), "stop_reason": outcome.stop_reason})
    sys.exit(_exit_code(outcome, summary))


def _ledger_for(spec: JobSpec, index: JournalIndex) -> CreditLedger | None:
    """The budget of --max-credits: it covers everything this run directory has spent."""
    if spec.max_credits is None:
        return None
    spent = index.credits  # every attempt of every session, as the budget counts it
    return CreditLedger.for_job(spec.max_credits, spec.model, spent=spent,
                                output_bound=spec.max_output_tokens_bound)


def _credits_per_row(index: JournalIndex) -> float:
    answered = index.count(STATE_OK)
    return index.credits / answered if answered else 0.0


def _confirm_spend(credits: float, threshold: float, *, ask: bool,
                   what: str = "the estimate", sample_kept_in: Path | None = None) -> None:
    """Above --confirm-above: ask on a TTY, refuse elsewhere unless --yes."""
    if credits <= threshold or not ask:
        return
    nothing = (f"the calibration sample is kept in {sample_kept_in}; nothing else was sent"
               if sample_kept_in else "nothing was sent")
    if not sys.stdin.isatty():
        why = (f"is above --confirm-above ({threshold:,.2f})" if threshold > 0
               else "is paid for")
        raise InputError(
            f"{what} (about {credits:,.2f} credits) {why}; pass --yes to go on without "
            f"asking ({nothing})"
        )
    if not click.confirm(f"Spend about {credits:,.2f} credits?", err=True):
        raise InputError(f"not confirmed; {nothing}")


def _balance_check(needed: float, ignore_balance: bool) -> Callable[[ApiClient], Awaitable[None]]:
    """Before dispatch: refuse to start when GET /credits says the balance is below ``needed``."""

    async def check_balance(client: ApiClient) -> None:
        if ignore_balance or needed <= 0:
            return
        balance = await client.get_credits()
        if balance is not None and balance < needed:
            raise InputError(
                f"the balance ({balance:,.4f} credits) is below the estimate "
                f"({needed:,.4f}); top up, or pass --ignore-balance to start anyway"
            )

    return check_balance


def _calibrate(plan: RunPlan, preflight: Preflight, sample_size: int, price: Price, *,
               threshold: float, ask: bool, ignore_balance: bool, quiet: bool) -> Calibration:
    """Send the sample (asking first if it alone is above --confirm-above), show its real
    cost, then the calibrated estimate."""
    sample = plan_sample(plan, preflight, sample_size, price)
    sample_cost = sample.estimate.credits.high
    if not quiet:
        _err(f"calibration: {len(sample.pick.rows)} sample rows spread over the manifest, "
             f"{len(sample.to_send)} to send (≈ {sample.estimate.credits.expected:,.4f} credits, "
             f"at most ≈ {sample_cost:,.4f}), {sample.reused} already in {plan.run_dir.path}")
    _confirm_spend(sample_cost, threshold, ask=ask, what="the calibration sample")
    outcome = send_sample(plan, sample, before_dispatch=_balance_check(sample_cost,
                                                                          ignore_balance))
    if not quiet and outcome is not None and sys.stderr.isatty():
        sys.stderr.write("\n")
    calibration = conclude(plan, preflight, sample, outcome, price)
    if calibration.fit is None:
        _err("calibration: no sample row was answered with usage; the estimate stays "
             "uncalibrated")
        return calibration
    if not quiet:
        for line in report_lines(calibration.fit, price, sent=calibration.sent,
                                 reused=calibration.reused, failed=calibration.failed):
            _err(line)
        whole = calibration.whole_run
        assert whole is not None and calibration.remaining is not None
        _err("calibrated estimate for the whole run (rows already answered at their real cost):")
        for line in estimate_lines(whole, rows_total=preflight.rows_total, label="sendable rows"):
            _err(line)
    return calibration


# --- estimate ------------------------------------------------------------------------------
@cli.command(
    epilog="""\b
Examples:
  batchrun estimate corpus.jsonl --job jobs/summarise.toml
  batchrun estimate corpus.parquet --json | jq .credits
  BATCHRUN_API_KEY=sk-... batchrun estimate corpus.jsonl --job jobs/summarise.toml \\
      --calibrate 50 --out runs/night1      # then: batchrun run ... --out runs/night1
"""
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--job", "job_file", type=click.Path(path_type=Path), help="Job spec TOML.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
              help="Folder that local media paths are confined to [manifest's folder].")
@click.option("--calibrate", type=click.IntRange(min=1),
              help="Send N sample rows spread over the manifest (paid) and calibrate the "
              "estimate on their real usage.")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              help="Run directory that keeps the calibration sample; `run --out` the same "
              "directory later and the sample is not paid again [runs/<manifest>-<hash>].")
@click.option("--endpoint", help="API base URL, for --calibrate [env BATCHRUN_ENDPOINT].")
@click.option("--api-key", help=f"API key for --calibrate [env {API_KEY_ENV}].")
@click.option("--emulate", is_flag=True,
              help="Calibrate against the embedded API emulator (no key, no network).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before a paid calibration.")
def estimate(
    manifest: Path,
    job_file: Path | None,
    as_json: bool,
    media_root: Path | None,
    calibrate: int | None,
    out: Path | None,
    endpoint: str | None,
    api_key: str | None,
    emulate: bool,
    yes: bool,
) -> None:
    """Estimate tokens, credits and USD for MANIFEST; nothing is sent without --calibrate.

    Text is estimated by characters per token by script, media by Gemini's per-image,
    per-page and per-second rules; output by the job's expected_output_tokens (low/high band).
    With --calibrate N, N rows spread over the manifest are sent first (it asks, or --yes):
    their real cost is shown, the estimate is fitted to them and given with a 90% interval.
    """
    _check_manifest(manifest)
    spec = _load_spec(job_file, endpoint=endpoint,
                      media_root=str(media_root) if media_root else None)
    price = price_for(spec.model, {spec.model: spec.price} if spec.price else None)
    if calibrate is None:
        preflight = scan_manifest(manifest, spec, price)
        if as_json:
            _emit_json({**preflight.to_send.as_dict(), "model": spec.model})
        else:
            _print_estimate(preflight, heading=f"estimate for {manifest} ({spec.model}):")
        return
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key and not emulate:
        raise InputError(f"--calibrate sends rows: set {API_KEY_ENV} or pass --api-key "
                         "(or --emulate to try it locally)")
    fingerprint = manifest_fingerprint(manifest)
    with _endpoint_for(emulate, spec.endpoint) as chosen_endpoint:
        spec = spec.with_overrides(endpoint=chosen_endpoint)
        resolved_endpoint = spec.resolved_endpoint()
        # The embedded emulator's port changes every time; its answers do not.
        run_path = out or default_run_dir(manifest, fingerprint, spec,
                                          "emulator" if emulate else resolved_endpoint)
        run_dir = RunDir(run_path)
        opened = open_run(run_dir, fingerprint, retry_failed=False)  # locks
        try:
            preflight = scan_manifest(manifest, spec, price, is_done=opened.is_done,
                                      done_lines=opened.done_lines, rows_total=opened.rows_total)
            _print_estimate(preflight,
                            heading=f"uncalibrated estimate for {manifest} ({spec.model}):")
            run_dir.begin(run_info(
                manifest=manifest, fingerprint=fingerprint, job=spec.describe(),
                endpoint=resolved_endpoint, rows_total=preflight.rows_total,
            ))
            plan = RunPlan(manifest=manifest, run_dir=run_dir, job=spec,
                           endpoint=resolved_endpoint, api_key=key or EMULATOR_KEY,
                           rows_total=preflight.rows_total, index=opened.index,
                           media_root=media_root)
            # The estimate command spends nothing unless told: a paid sample always asks.
            # A 402 on the sample stops it with exit 3 and says to top up.
            calibration = _calibrate(plan, preflight, calibrate, price, threshold=0.0,
                                     ask=not (yes or emulate), ignore_balance=True, quiet=False)
            resume = _resume_command(manifest, run_path, {"--job": job_file,
                                                          "--endpoint": endpoint,
                                                          "--emulate": emulate})
            if calibration.outcome is not None:
                summary = finish(plan, calibration.outcome, fingerprint=fingerprint,
                                 resume_command=resume)
                if calibration.outcome.stop_reason is not None:
                    _print_summary(summary, calibration.outcome, run_path)
                    sys.exit(calibration.outcome.exit_code)
        finally:
            run_dir.release()
    _err(f"the sample's answers are kept in {run_path}; to run the rest without paying for "
         f"them again:\n  {resume}")
    whole = calibration.whole_run
    if not as_json:
        return
    data: dict[str, Any] = {**(whole or preflight.to_send).as_dict(), "model": spec.model,
            "uncalibrated": {
                "credits": preflight.to_send.credits.as_dict(6),
                "usd": preflight.to_send.usd.as_dict(6),
                "output_tokens": preflight.to_send.output_tokens.as_dict(0),
                "prompt_tokens": preflight.to_send.prompt_tokens,
            },
            "already_spent": {"rows": calibration.spent.rows,
                              "credits": round(calibration.spent.credits.expected, 6)},
            "run_dir": str(run_path), "calibration": None}
    if calibration.fit is not None:
        data["calibration"] = calibration_dict(calibration.fit, sent=calibration.sent,
                                               reused=calibration.reused,
                                               failed=calibration.failed, run_dir=str(run_path))
    _emit_json(data)


# --- status / export -----------------------------------------------------------------------
@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def status(run_dir: Path, as_json: bool) -> None:
    """Show done / failed / pending rows, errors by code, tokens, spend and what is left of
    RUN_DIR (read from its journal, also while it runs; results.parquet is not touched).

    \b
    Example:
      batchrun status runs/night1 --json
    """
    from batchrun.reporting.status import run_status, status_lines

    data = run_status(run_dir)
    if as_json:
        _emit_json(data)
        return
    for line in status_lines(data, run_dir):
        click.echo(line)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="FILE.parquet (results schema) or FILE.jsonl (one object per row).")
@click.option("--format", "fmt", type=click.Choice(["results", "openai-batch"]),
              default="results", show_default=True,
              help="openai-batch: JSONL lines shaped like the OpenAI Batch API's output file.")
@click.option("--with-input", is_flag=True,
              help="Join the manifest's own columns back onto each row (a column whose name "
              "is taken by the results gets an input_ prefix).")
def export(run_dir: Path, output: Path, fmt: str, with_input: bool) -> None:
    """Compact the journal of RUN_DIR into results.parquet and write the latest result of
    every row to a Parquet or JSONL file, in manifest order. Works on unfinished runs too.

    \b
    Examples:
      batchrun export runs/night1 --output answers.jsonl
      batchrun export runs/night1 --output batch_output.jsonl --format openai-batch
      batchrun export runs/night1 --output joined.parquet --with-input
    """
    from batchrun.reporting.export import export_results

    rows = export_results(RunDir(run_dir), output, fmt=fmt, with_input=with_input)
    _err(f"wrote {rows:,} rows to {output}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="HTML file to write [RUN_DIR/report.html].")
def report(run_dir: Path, output: Path | None) -> None:
    """Write a self-contained HTML report of RUN_DIR: totals, cost by kind of row, latency
    histogram, throughput and spend over time, errors by code, the costliest rows.

    \b
    Example:
      batchrun report runs/night1 --output night1.html
    """
    from batchrun.reporting.report import build_report

    html = build_report(run_dir)
    target = output or run_dir / "report.html"
    target.write_text(html, encoding="utf-8")
    _err(f"wrote {target}")


def _register_emulator() -> None:
    from batchrun.emulator.command import emulator_command

    cli.add_command(emulator_command, name="emulator")


_register_emulator()


def main() -> None:
    """Console entry point."""
    cli()
