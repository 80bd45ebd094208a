"""The ``batchrun`` command: flags and job file → JobSpec → runner; exit codes.

Exit codes: 0 all rows ok · 1 finished, some rows failed · 2 bad usage or input ·
3 stopped by a fatal API answer · 4 stopped at the budget cap · 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import click
import orjson

from batchrun import __version__
from batchrun.client import ApiClient
from batchrun.errors import BatchrunError, InputError
from batchrun.job import JobSpec, load_job
from batchrun.manifest import manifest_fingerprint
from batchrun.preflight import Preflight, scan_manifest
from batchrun.pricing import price_for
from batchrun.runner import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_USAGE,
    RunOutcome,
    RunPlan,
    execute,
    finish,
)
from batchrun.store import RunDir, run_info
from batchrun.summary import RunSummary, summarize

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
    estimate = preflight.to_send
    credits = estimate.credits
    usd = estimate.usd
    _err(heading)
    _err(
        f"  rows to send {estimate.rows - estimate.rows_unsendable:,} of {preflight.rows_total:,}"
        f" · unsendable {estimate.rows_unsendable:,}"
    )
    _err(
        f"  prompt tokens ≈ {estimate.prompt_tokens:,} · output tokens ≈ "
        f"{int(estimate.output_tokens.expected):,} "
        f"({int(estimate.output_tokens.low):,}–{int(estimate.output_tokens.high):,})"
    )
    _err(
        f"  credits ≈ {credits.expected:,.4f} ({credits.low:,.4f}–{credits.high:,.4f}) · "
        f"USD ≈ ${usd.expected:,.4f} (${usd.low:,.4f}–${usd.high:,.4f})"
    )
    for reason in estimate.unsendable_examples[:5]:
        _err(f"  unsendable: {reason}")
    _err("  (an estimate: exact token counts exist only after each call)")


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
    from batchrun.emulator import EmulatorServer

    with EmulatorServer() as server:
        yield server.base_url


def _exit_code(outcome: RunOutcome, summary: RunSummary) -> int:
    if outcome.stop_reason is not None:
        return outcome.exit_code
    return EXIT_ROWS_FAILED if (summary.rows_failed or summary.rows_pending) else EXIT_OK


def _print_summary(summary: RunSummary, outcome: RunOutcome, run_dir: Path) -> None:
    counters = outcome.counters
    _err(
        f"done: {summary.rows_ok:,} ok · {summary.rows_failed:,} failed · "
        f"{summary.rows_pending:,} pending of {summary.rows_total:,} rows"
    )
    _err(
        f"tokens: prompt {summary.prompt_tokens:,} · completion {summary.completion_tokens:,} · "
        f"reasoning {summary.reasoning_tokens:,} (not billed)"
    )
    _err(f"spent: {summary.credits:,.6f} credits (${summary.usd:,.6f})")
    if summary.errors_by_code:
        errors = ", ".join(f"{code} ×{count}" for code, count in summary.errors_by_code.items())
        _err(f"errors: {errors}")
    if counters.missing_usage:
        _err(f"warning: {counters.missing_usage} answers came without usage; their cost is unknown")
    _err(f"results: {run_dir / 'results.parquet'}")
    error = outcome.stop_error
    if error is not None:
        advice = getattr(error, "advice", "fix the cause, then resume")
        done = summary.rows_ok + summary.rows_failed
        _err(
            f"stopped: {error} after {done:,} of {summary.rows_total:,} rows; {advice}:\n"
            f"  {summary.resume_command}"
        )
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
              help="Send N sample rows first to sharpen the estimate (not yet available).")
@click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
              help="Folder that local media paths are confined to [manifest's folder].")
@click.option("--media-budget", type=click.IntRange(min=1),
              help="Bytes of media payload in flight at once.")
@click.option("--reuse", type=click.Path(path_type=Path, file_okay=False),
              help="Earlier run directory whose answers may be reused (not yet available).")
@click.option("--quiet", "-q", is_flag=True, help="No estimate or progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON on stdout.")
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
    if calibrate is not None or reuse is not None:
        raise InputError("--calibrate and --reuse are not available in this version yet")
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
    )
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key and not emulate:
        raise InputError(
            f"no API key: set {API_KEY_ENV} or pass --api-key (or --emulate to try it locally)"
        )
    run_dir = RunDir(out)
    fingerprint = manifest_fingerprint(manifest)
    price = price_for(spec.model, {spec.model: spec.price} if spec.price else None)
    resume_command = _resume_command(manifest, out, {
        "--job": job_file, "--endpoint": endpoint, "--emulate": emulate,
        "--concurrency": concurrency, "--rpm": rpm, "--tpm": tpm, "--max-credits": max_credits,
        "--media-root": media_root, "--media-budget": media_budget, "--yes": yes,
    })

    with _endpoint_for(emulate, spec.endpoint) as chosen_endpoint:
        spec = spec.with_overrides(endpoint=chosen_endpoint)
        resolved_endpoint = spec.resolved_endpoint()
        api_key_value = key or EMULATOR_KEY
        run_dir.check_same_manifest(fingerprint)
        index = run_dir.load_index()
        preflight = scan_manifest(
            manifest, spec, price,
            is_done=lambda row_id: index.is_done(row_id, retry_failed=retry_failed),
        )
        if not quiet:
            resumed = f" (resuming {len(index.rows):,} rows already recorded)" if index.rows else ""
            _print_estimate(preflight, heading=f"estimate for {manifest}{resumed}:")
        threshold = spec.confirm_above if spec.confirm_above is not None else DEFAULT_CONFIRM_ABOVE
        expected = preflight.to_send.credits.expected
        if expected > threshold and not yes and not emulate:
            if not sys.stdin.isatty():
                raise InputError(
                    f"the estimate ({expected:,.2f} credits) is above --confirm-above "
                    f"({threshold:,.2f}); pass --yes to run without asking"
                )
            if not click.confirm(f"Spend about {expected:,.2f} credits?", err=True):
                raise InputError("not confirmed; nothing was sent")

        run_dir.prepare(run_info(
            manifest=manifest, fingerprint=fingerprint, job=spec.describe(),
            endpoint=resolved_endpoint, rows_total=preflight.rows_total,
        ))
        try:
            plan = RunPlan(
                manifest=manifest,
                run_dir=run_dir,
                job=spec,
                endpoint=resolved_endpoint,
                api_key=api_key_value,
                rows_total=preflight.rows_total,
                index=index,
                retry_failed=retry_failed,
                media_root=media_root,
                show_progress=not quiet,
                progress_interval_s=progress_every,
                estimate_credits=expected,
            )

            async def check_balance(client: ApiClient) -> None:
                if ignore_balance or expected <= 0:
                    return
                balance = await client.get_credits()
                if balance is not None and balance < expected:
                    raise InputError(
                        f"the balance ({balance:,.4f} credits) is below the estimate "
                        f"({expected:,.4f}); top up, or pass --ignore-balance to start anyway"
                    )

            outcome = anyio.run(lambda: execute(plan, before_dispatch=check_balance))
            if not quiet and sys.stderr.isatty():
                sys.stderr.write("\n")
            summary = finish(plan, outcome, fingerprint=fingerprint,
                             resume_command=resume_command)
        finally:
            run_dir.release()

    if not quiet or outcome.stop_reason is not None:
        _print_summary(summary, outcome, out)
    if as_json:
        _emit_json({**summary.as_dict(), "stop_reason": outcome.stop_reason})
    sys.exit(_exit_code(outcome, summary))


# --- estimate ------------------------------------------------------------------------------
@cli.command(
    epilog="""\b
Examples:
  batchrun estimate corpus.jsonl --job jobs/summarise.toml
  batchrun estimate corpus.parquet --json | jq .credits
"""
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--job", "job_file", type=click.Path(path_type=Path), help="Job spec TOML.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
              help="Folder that local media paths are confined to [manifest's folder].")
@click.option("--calibrate", type=click.IntRange(min=1),
              help="Send N sample rows to sharpen the estimate (not yet available).")
@click.option("--endpoint", help="API base URL, for --calibrate.")
@click.option("--api-key", help=f"API key for --calibrate [env {API_KEY_ENV}].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before a paid calibration.")
def estimate(
    manifest: Path,
    job_file: Path | None,
    as_json: bool,
    media_root: Path | None,
    calibrate: int | None,
    endpoint: str | None,
    api_key: str | None,
    yes: bool,
) -> None:
    """Estimate tokens, credits and USD for MANIFEST without sending anything.

    Text is estimated by characters per token by script, media by Gemini's per-image,
    per-page and per-second rules; output by the job's expected_output_tokens (low/high band).
    """
    if calibrate is not None:
        raise InputError("--calibrate is not available in this version yet")
    _check_manifest(manifest)
    spec = _load_spec(job_file, media_root=str(media_root) if media_root else None)
    price = price_for(spec.model, {spec.model: spec.price} if spec.price else None)
    preflight = scan_manifest(manifest, spec, price)
    if as_json:
        _emit_json({**preflight.to_send.as_dict(), "model": spec.model})
    else:
        _print_estimate(preflight, heading=f"estimate for {manifest} ({spec.model}):")


# --- status / export -----------------------------------------------------------------------
def _summary_of(run_dir_path: Path) -> tuple[RunDir, dict[str, Any], RunSummary]:
    run_dir = RunDir(run_dir_path)
    info = run_dir.read_info()
    resume = f"batchrun run {shlex.quote(info.get('manifest', 'MANIFEST'))} --out " + shlex.quote(
        str(run_dir_path)
    )
    summary = summarize(run_dir.load_index(), int(info.get("rows_total", 0)),
                        resume_command=resume)
    return run_dir, info, summary


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def status(run_dir: Path, as_json: bool) -> None:
    """Show done / failed / pending rows, errors by code, tokens and spend of RUN_DIR.

    \b
    Example:
      batchrun status runs/night1 --json
    """
    _, info, summary = _summary_of(run_dir)
    if as_json:
        _emit_json({**summary.as_dict(), "manifest": info.get("manifest")})
        return
    click.echo(
        f"{run_dir}: {summary.rows_ok:,} ok · {summary.rows_failed:,} failed · "
        f"{summary.rows_pending:,} pending of {summary.rows_total:,}"
    )
    for code, count in summary.errors_by_code.items():
        click.echo(f"  {code}: {count:,}")
    click.echo(
        f"tokens: prompt {summary.prompt_tokens:,} · completion {summary.completion_tokens:,}"
        f" · reasoning {summary.reasoning_tokens:,}"
    )
    click.echo(f"spent: {summary.credits:,.6f} credits (${summary.usd:,.6f})")
    if summary.resume_command:
        click.echo(f"resume: {summary.resume_command}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="FILE.parquet (results schema) or FILE.jsonl (one object per row).")
def export(run_dir: Path, output: Path) -> None:
    """Write the latest result of every row of RUN_DIR to a Parquet or JSONL file.

    \b
    Example:
      batchrun export runs/night1 --output answers.jsonl
    """
    from batchrun.export import export_results

    run, info, summary = _summary_of(run_dir)
    rows = export_results(run, info, summary, output)
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
    from batchrun.report import build_report

    html = build_report(run_dir)
    target = output or run_dir / "report.html"
    target.write_text(html, encoding="utf-8")
    _err(f"wrote {target}")


def _register_emulator() -> None:
    from batchrun.emulator_cmd import emulator_command

    cli.add_command(emulator_command, name="emulator")


_register_emulator()


def main() -> None:
    """Console entry point."""
    cli()


if __name__ == "__main__":
    main()
