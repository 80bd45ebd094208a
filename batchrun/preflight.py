"""One streaming pass over the manifest before anything is sent: count, check ids, estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.estimate import RowEstimate, RunEstimate, Tally, assumed_estimate, row_estimate
from batchrun.job import JobSpec
from batchrun.manifest import Row, iter_rows
from batchrun.pricing import Price


def estimate_of(row: Row, job: JobSpec) -> RowEstimate:
    """The prompt-token estimate of one sendable row (no media file is read).

    The manifest reader has already rendered templates and gathered media references. The
    system prompt is counted where the request builder puts one (OpenAI batch bodies get none).
    """
    system = None if row.body is not None else (
        row.system if row.system is not None else job.system)
    return row_estimate(row.messages, row.prompt, system, row.media)


@dataclass
class Preflight:
    rows_total: int = 0
    rows_sendable: int = 0  # over the whole manifest, rows done earlier included
    tally: Tally = field(default_factory=Tally)  # the rows still to send
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
    tally = preflight.tally
    for row in iter_rows(manifest, job, check_duplicates=True):
        preflight.rows_total += 1
        if row.error is None:
            preflight.rows_sendable += 1
        if is_done(row.id):
            continue
        if row.error is not None:
            tally.add_unsendable(row.id, row.line, row.error)
            continue
        tally.add(estimate_of(row, job))
    preflight.to_send = assumed_estimate(tally, job.expected_output_tokens, price)
    return preflight
