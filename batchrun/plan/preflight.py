"""One streaming pass over the manifest before anything is sent: count, check ids, estimate."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.core.errors import RowError
from batchrun.cost.catalog import Price, rules_for
from batchrun.cost.estimate import RunEstimate, Tally, assumed_estimate
from batchrun.cost.request_cost import request_cost
from batchrun.cost.tokens import RowEstimate, row_estimate
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver, media_root_for
from batchrun.request.payload import build_request


def estimate_of(row: Row, job: JobSpec, media: MediaResolver | None = None) -> RowEstimate:
    """The prompt-token estimate of one sendable row.

    With a resolver, the row's request is prepared as the runner would: local files are
    checked (RowError if one cannot be sent, or the request is over its size limit) and their
    metadata (pages, seconds, pixels) is read, but not their content. Without one, media count
    by the documented defaults; the system prompt is counted where the request builder puts
    one (OpenAI batch bodies get none).
    """
    if media is None:
        system = None if row.body is not None else (
            row.system if row.system is not None else job.system)
        return row_estimate(row.messages, row.prompt, system, row.media,
                            rules=rules_for(job.model))
    request = build_request(row, job, media, probe=True)
    try:
        cost = request_cost(request.messages, request.metas, model=job.model,
                            body_bytes=len(request.skeleton), text_only=request.text_only,
                            rules=rules_for(job.model))
        request.check_size(job.max_request_bytes)
    finally:
        request.close()
    assert cost.estimate is not None  # counts=True (the default) always estimates
    return cost.estimate


@dataclass
class Preflight:
    rows_total: int = 0
    rows_sendable: int = 0  # over the rows read (a resume skips done rows unread)
    rows_reused: int = 0  # rows --reuse will answer from an earlier run (text-only rows)
    tally: Tally = field(default_factory=Tally)  # the rows still to send
    to_send: RunEstimate = field(default_factory=RunEstimate)
    # Every column the rows read held besides those their shape used, in first-seen order
    # (``manifest.columns.unused_by`` tells which of them the job never reads).
    columns: dict[str, None] = field(default_factory=dict)


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
    """Stream every row once: rows that ``is_done`` are counted but not estimated; unsendable
    rows (media that cannot be sent included) are listed with their reason; duplicate ids raise
    InputError (naming both lines) at the end of the pass, before anything is sent.

    On a resume, ``done_lines`` passes over the rows already done without parsing them (the
    manifest is the one whose duplicates were checked when the run began) and ``rows_total``
    comes from the run directory.
    """
    preflight = Preflight()
    tally = preflight.tally
    columns = preflight.columns
    media = MediaResolver(media_root_for(manifest, job.media_root),
                          max_file_bytes=job.max_file_bytes)
    check_ids = done_lines is None
    id_hashes = array("q")
    for row in iter_rows(manifest, job, check_duplicates=False, done_lines=done_lines):
        if check_ids:
            id_hashes.append(hash(row.id))
        preflight.rows_total += 1
        if not columns.keys() >= row.fields.keys():
            columns.update(dict.fromkeys(row.fields))
        if row.error is None:
            preflight.rows_sendable += 1
        if is_done(row):
            continue
        if row.error is not None:
            tally.add_unsendable(row.id, row.line, row.error)
            continue
        if will_reuse is not None and will_reuse(row):
            preflight.rows_reused += 1
            continue
        try:
            estimate = estimate_of(row, job, media)
        except RowError as error:
            tally.add_unsendable(row.id, row.line, f"{row.id}: {error.message}")
            continue
        tally.add(estimate)
    if check_ids:
        _check_unique_ids(manifest, job, id_hashes)
    preflight.to_send = assumed_estimate(tally, job.expected_output_tokens, price)
    if rows_total is not None:
        preflight.rows_total = rows_total
    return preflight


def _check_unique_ids(manifest: Path, job: JobSpec, id_hashes: array[int]) -> None:
    """Duplicate ids raise InputError naming both lines.

    The scan keeps 8 bytes per id (its 64-bit hash) instead of a set of Python ints (~75 bytes
    each), so memory stays flat on large manifests; only when two hashes agree does the
    manifest reader's own check run again to name the lines (a hash collision passes it).
    """
    if len(id_hashes) < 2:
        return
    hashes = pa.Array.from_buffers(pa.int64(), len(id_hashes), [None, pa.py_buffer(id_hashes)])
    # Sorted, equal neighbours are duplicates (a hash set would cost ~100 bytes per id).
    ordered = pc.take(hashes, pc.array_sort_indices(hashes))
    if not pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py():
        return
    for _row in iter_rows(manifest, job, check_duplicates=True):
        pass
