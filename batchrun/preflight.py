"""One streaming pass over the manifest before anything is sent: count, check ids, estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.estimate import RowEstimate, RunEstimate, row_estimate
from batchrun.job import JobSpec
from batchrun.limits import prompt_too_large
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
    to_send: RunEstimate = field(default_factory=RunEstimate)


def scan_manifest(
    manifest: Path,
    job: JobSpec,
    price: Price,
    *,
    is_done: Callable[[str], bool] = lambda _row_id: False,
) -> Preflight:
    """Stream every row once: duplicate ids raise InputError (naming both lines); rows that
    ``is_done`` are counted but not estimated; unsendable rows are listed with their reason."""
    preflight = Preflight()
    for row in iter_rows(manifest, job, check_duplicates=True):
        preflight.rows_total += 1
        if is_done(row.id):
            continue
        if row.error is not None:
            preflight.to_send.add_unsendable(row.error)
            continue
        estimate = estimate_of(row, job)
        too_large = prompt_too_large(job.model, estimate.prompt_tokens)
        if too_large is not None:
            preflight.to_send.add_unsendable(f"{row.id}: {too_large.message}")
            continue
        preflight.to_send.add_row(estimate, job.expected_output_tokens, price)
    preflight.to_send.finish(price)
    return preflight
