"""One streaming pass over the manifest before anything is sent: count, check ids, estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.errors import RowError
from batchrun.estimate import RowEstimate, RunEstimate, row_estimate, rules_for
from batchrun.job import JobSpec
from batchrun.manifest import Row, iter_rows
from batchrun.media import MediaResolver, media_root_for
from batchrun.payload import prepare_request
from batchrun.pricing import Price


def estimate_of(row: Row, job: JobSpec, media: MediaResolver | None = None) -> RowEstimate:
    """The prompt-token estimate of one sendable row.

    With a resolver, the row's request is prepared as the runner would: local files are
    checked (RowError if one cannot be sent, or the request is over its size limit) and their
    metadata (pages, seconds, pixels) is read, but not their content. Without one, media count
    by the documented defaults.
    """
    if media is None:
        return row_estimate(row.messages, row.prompt, row.system or job.system, row.media,
                            rules=rules_for(job.model))
    prepared = prepare_request(row, job, media, probe=True, rules=rules_for(job.model))
    prepared.close()
    return prepared.estimate


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
    ``is_done`` are counted but not estimated; unsendable rows (media that cannot be sent
    included) are listed with their reason."""
    preflight = Preflight()
    media = MediaResolver(media_root_for(manifest, job.media_root),
                          max_file_bytes=job.max_file_bytes)
    for row in iter_rows(manifest, job, check_duplicates=True):
        preflight.rows_total += 1
        if is_done(row.id):
            continue
        if row.error is not None:
            preflight.to_send.add_unsendable(row.error)
            continue
        try:
            estimate = estimate_of(row, job, media)
        except RowError as error:
            preflight.to_send.add_unsendable(f"row {row.id!r} (line {row.line}): {error.message}")
            continue
        preflight.to_send.add_row(estimate, job.expected_output_tokens, price)
    preflight.to_send.finish(price)
    return preflight
