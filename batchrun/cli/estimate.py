"""``batchrun estimate``: what a manifest will cost, optionally calibrated on a paid sample."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from batchrun.cli.common import ClickConsole, emit_json, err, start_emulator
from batchrun.cli.key_hint import api_key_hint
from batchrun.cli.options import estimate_options
from batchrun.cli.run import exit_code, print_summary
from batchrun.cost.calibrate import as_dict as calibration_dict
from batchrun.cost.estimate import estimate_lines
from batchrun.manifest.columns import unused_by, unused_lines
from batchrun.plan.estimating import (
    CalibratedEstimate,
    CalibrateOptions,
    calibrate_estimate,
    estimate_manifest,
)


@click.command(
    epilog="""\b
Examples:
  batchrun estimate corpus.jsonl --job jobs/summarise.toml
  batchrun estimate corpus.parquet --json | jq .credits
  BATCHRUN_API_KEY=sk-... batchrun estimate corpus.jsonl --job jobs/summarise.toml \\
      --calibrate 50 --out runs/night1      # then: batchrun run ... --out runs/night1
"""
)
@estimate_options
def estimate(manifest: Path, job_file: Path | None, as_json: bool, media_root: Path | None,
             calibrate: int | None, **calibration: Any) -> None:
    """Estimate tokens, credits and USD for MANIFEST; nothing is sent without --calibrate.

    Text is estimated by characters per token by script, media by Gemini's per-image,
    per-page and per-second rules; output by the job's expected_output_tokens (low/high band).
    With --calibrate N, N rows spread over the manifest are sent first (it asks, or --yes):
    their real cost is shown, the estimate is fitted to them and given with a 90% interval.
    """
    if calibrate is not None:
        options = CalibrateOptions(manifest, calibrate, job_file=job_file,
                                   media_root=media_root, **calibration)
        render_calibrated(calibrate_estimate(options, ClickConsole(), start_emulator), as_json,
                          key_hint=api_key_hint(options.api_key, emulate=options.emulate))
        return
    found = estimate_manifest(manifest, job_file, media_root=media_root,
                              endpoint=calibration["endpoint"])
    unused = unused_by(found.preflight.columns, found.spec)
    if as_json:
        emit_json({**found.preflight.to_send.as_dict(), "model": found.spec.model,
                   "unused_columns": [dataclasses.asdict(column) for column in unused]})
    else:
        # The table is the command's output (stdout: `> file` keeps it); talk stays on stderr.
        click.echo(f"estimate for {manifest} ({found.spec.model}):")
        for line in estimate_lines(found.preflight.to_send,
                                   rows_total=found.preflight.rows_total):
            click.echo(line)
        for line in unused_lines(unused):
            err(line)
    if found.problem is not None:
        raise found.problem  # no row can be sent: exit 2, saying why


def render_calibrated(report: CalibratedEstimate, as_json: bool,
                      key_hint: str | None = None) -> None:
    """A stopped sample: its summary and exit code. Otherwise where the sample's answers are,
    and with --json the calibrated estimate. ``key_hint`` goes with a printed command."""
    stopped = report.stopped
    if stopped is not None:
        assert report.summary is not None
        print_summary(report.summary, stopped, report.run_dir)
        if key_hint:
            err(key_hint)
        sys.exit(exit_code(stopped, report.summary))
    err(f"the sample's answers are kept in {report.run_dir}; to run the rest without paying "
        f"for them again:\n  {report.resume_command}")
    if key_hint:
        err(key_hint)
    if as_json:
        emit_json(calibrated_json(report))


def calibrated_json(report: CalibratedEstimate) -> dict[str, Any]:
    """``estimate --calibrate --json``: the calibrated estimate, the uncalibrated one, what the
    run directory already spent and the fit."""
    calibration, to_send = report.calibration, report.preflight.to_send
    data: dict[str, Any] = {
        **(calibration.whole_run or to_send).as_dict(), "model": report.spec.model,
        "uncalibrated": {
            "credits": to_send.credits.as_dict(6),
            "usd": to_send.usd.as_dict(6),
            "output_tokens": to_send.output_tokens.as_dict(0),
            "prompt_tokens": to_send.prompt_tokens,
        },
        "already_spent": {"rows": calibration.spent.rows,
                          "credits": round(calibration.spent.credits.expected, 6)},
        "run_dir": str(report.run_dir), "calibration": None}
    if calibration.fit is not None:
        data["calibration"] = calibration_dict(calibration.fit, sent=calibration.sent,
                                               reused=calibration.reused,
                                               failed=calibration.failed,
                                               run_dir=str(report.run_dir))
    return data
