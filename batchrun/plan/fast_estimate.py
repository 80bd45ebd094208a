"""The preflight of a manifest of plain prompt rows, from whole Arrow columns.

Gives the very ``Preflight`` that ``preflight.scan_manifest`` would (the same rows, token
counts, duplicate-id check and columns), at about the speed of pyarrow reading the file: the
rows are never made into Python objects (``manifest.arrow_rows``, ``cost.arrow_tokens``). When
the manifest is not all plain prompt rows it returns None, and the caller scans it row by row.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.cost.arrow_tokens import text_tokens_total
from batchrun.cost.catalog import Price
from batchrun.cost.estimate import assumed_estimate
from batchrun.cost.limits import cannot_overflow
from batchrun.cost.tokens import MESSAGE_OVERHEAD_TOKENS, text_tokens
from batchrun.manifest.arrow_rows import NotPlain, PlainBatch, plain_batches
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.plan.preflight import Preflight

# Bytes a body adds around its texts (keys, model, flags): a generous bound.
_BODY_BYTES = 4096
# JSON may write a byte of text as up to 6 (``\u0001``): the bound of a body's size.
_ESCAPED = 6


def fast_preflight(manifest: Path, job: JobSpec, price: Price) -> Preflight | None:
    """The preflight of a manifest of plain prompt rows; None for any other manifest."""
    preflight = Preflight()
    ids: list[pa.Array] = []  # the id column alone: about 14 bytes a row for "row-123456"
    tokens = 0
    try:
        for batch in plain_batches(manifest, job):
            _check_sizes(batch, job)
            tokens += _batch_tokens(batch, job)
            ids.append(batch.ids)
            preflight.rows_total += len(batch.ids)
            preflight.columns.update(dict.fromkeys(batch.unused))
    except NotPlain:
        return None
    preflight.rows_sendable = preflight.rows_total
    if preflight.rows_total:
        preflight.tally.add_rows("text", preflight.rows_total, tokens)
    _check_unique(manifest, job, ids, preflight.rows_total)
    preflight.to_send = assumed_estimate(preflight.tally, job.expected_output_tokens, price)
    return preflight


def _batch_tokens(batch: PlainBatch, job: JobSpec) -> int:
    """What ``messages_estimate`` gives each row's request, summed: the user turn, and the
    row's system (else the job's) when it is not empty."""
    rows = len(batch.prompts)
    tokens = rows * MESSAGE_OVERHEAD_TOKENS + text_tokens_total(batch.prompts)
    job_system = (MESSAGE_OVERHEAD_TOKENS + text_tokens(job.system)) if job.system else 0
    systems = batch.systems
    if systems is None:
        return tokens + rows * job_system
    present = pc.drop_null(systems)
    spoken = pc.filter(present, pc.greater(pc.binary_length(present), 0))
    tokens += len(spoken) * MESSAGE_OVERHEAD_TOKENS + text_tokens_total(spoken)
    return tokens + systems.null_count * job_system


def _check_sizes(batch: PlainBatch, job: JobSpec) -> None:
    """NotPlain when a row might be refused for its size (over the model's window, or over
    max_request_bytes): the row-by-row reader says which and why."""
    largest = _max_bytes(batch.prompts) + _max_bytes(batch.systems)
    largest += len((job.system or "").encode())
    if not cannot_overflow(job.model, largest + _BODY_BYTES):
        raise NotPlain("a row that may not fit the model's window")
    if largest * _ESCAPED + _BODY_BYTES > job.max_request_bytes:
        raise NotPlain("a row that may be over max_request_bytes")


def _max_bytes(values: pa.Array | None) -> int:
    if values is None or len(values) == values.null_count:
        return 0
    return int(pc.max(pc.binary_length(values)).as_py() or 0)


def _check_unique(manifest: Path, job: JobSpec, ids: list[pa.Array], rows: int) -> None:
    """A duplicate id: the row-by-row reader names both of its lines (InputError)."""
    # ``unique``'s length: the same hash table as ``count_distinct``, in half the time.
    if rows < 2 or len(pc.unique(pa.chunked_array(ids, pa.string()))) == rows:
        return
    for _row in iter_rows(manifest, job, check_duplicates=True):
        pass
