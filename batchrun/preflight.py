"""One streaming pass over the manifest before anything is sent: count, check ids, estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.estimate import RowEstimate, RunEstimate, row_estimate
from batchrun.job import JobSpec
from batchrun.manifest import Row, iter_rows
from batchrun.pricing import Price


def estimate_of(row: Row, job: JobSpec) -> RowEstimate:
    """The prompt-token estimate of one sendable row (no media file is read).

    The manifest reader has already rendered templates and gathered media references.
    """
    return row_estimate(row.messages, row.prompt, row.system or job.system, row.media)


@dataclass
class Preflight:
    rows_total: int = 0
    rows_reused: int = 0  # rows --reuse will answer from an earlier run (text-only rows)
    to_send: RunEstimate = field(default_factory=RunEstimate)


def scan_manifest(
    manifest: Path,
    job: JobSpec,
    price: Price,
    *,
    is_done: Callable[[Row], bool] = lambda _row: False,
    done_lines: bytes | None = None,
    rows_total: int | None = None,
    will_reuse: Callable[[Row], bool] | None = None,
) -> Preflight:
    """Stream every row once: duplicate ids raise InputError (naming both lines); rows that
    ``is_done`` are counted but not estimated; unsendable rows are listed with their reason.

    On a resume, ``done_lines`` passes over the rows already done without parsing them (the
    manifest is the one whose duplicates were checked when the run began) and ``rows_total``
    comes from the run directory.
    """
    preflight = Preflight()
    rows = iter_rows(manifest, job, check_duplicates=done_lines is None, done_lines=done_lines)
    for row in rows:
        preflight.rows_total += 1
        if is_done(row):
            continue
        if row.error is not None:
            preflight.to_send.add_unsendable(row.error)
            continue
        if will_reuse is not None and will_reuse(row):
            preflight.rows_reused += 1
            continue
        preflight.to_send.add_row(estimate_of(row, job), job.expected_output_tokens, price)
    preflight.to_send.finish(price)
    if rows_total is not None:
        preflight.rows_total = rows_total
    return preflight
