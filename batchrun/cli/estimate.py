"""``batchrun estimate``: what a manifest will cost, optionally calibrated on a paid sample."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from batchrun.cli.common import emit_json, err
from batchrun.cli.options import estimate_options
from batchrun.cost.estimate import estimate_lines
from batchrun.manifest.columns import unused_by, unused_lines
from batchrun.plan.estimating import estimate_manifest


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
        from batchrun.cli.calibrate import calibrate_and_render
        from batchrun.plan.calibrating import CalibrateOptions

        calibrate_and_render(CalibrateOptions(manifest, calibrate, job_file=job_file,
                                              media_root=media_root, **calibration), as_json)
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
