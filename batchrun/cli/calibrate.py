"""``batchrun estimate --calibrate``: the paid sample sent, then rendered (its summary and exit
code when it stopped, else where its answers are and, with --json, the calibrated estimate).
Loaded only when --calibrate is given: the plain estimate needs none of the wire."""

from __future__ import annotations

import sys
from typing import Any

from batchrun.cli.common import ClickConsole, emit_json, err, start_emulator
from batchrun.cli.key_hint import api_key_hint
from batchrun.cli.run import exit_code, print_summary
from batchrun.cost.calibrate import as_dict as calibration_dict
from batchrun.plan.calibrating import CalibratedEstimate, CalibrateOptions, calibrate_estimate


def calibrate_and_render(options: CalibrateOptions, as_json: bool) -> None:
    """Send the sample, fit the estimate and show it."""
    render_calibrated(calibrate_estimate(options, ClickConsole(), start_emulator), as_json,
                      key_hint=api_key_hint(options.api_key, emulate=options.emulate))


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
    retries, remaining = calibration.schema_retries, calibration.remaining
    if retries is not None and remaining is not None:  # in the totals above too
        data["schema_retries"] = retries.as_dict(remaining.rows_sendable,
                                                 report.spec.resolved_price())
    if calibration.fit is not None:
        data["calibration"] = calibration_dict(calibration.fit, sent=calibration.sent,
                                               reused=calibration.reused,
                                               failed=calibration.failed,
                                               run_dir=str(report.run_dir))
    return data
