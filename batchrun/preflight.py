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
    """The prompt-token estimate of one sendable row (no media file is read)."""
    if row.body is not None and row.messages is None:
        messages = row.body.get("messages")
        return row_estimate(messages if isinstance(messages, list) else [], None, None, ())
    prompt = row.prompt
    if prompt is None and job.prompt_template is not None:
        try:
            prompt = job.prompt_template.format_map(dict(row.fields))
        except (KeyError, IndexError, ValueError):
            prompt = job.prompt_template
    media = list(row.media)
    for column in job.media_columns:
        value = row.fields.get(column)
        if isinstance(value, str):
            media.append(value)
        elif isinstance(value, list | tuple):
            media.extend(str(item) for item in value)
    return row_estimate(row.messages, prompt, row.system or job.system, media)


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
        preflight.to_send.add_row(estimate_of(row, job), job.expected_output_tokens, price)
    preflight.to_send.finish(price)
    return preflight
