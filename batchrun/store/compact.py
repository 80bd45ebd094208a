"""results.parquet from the journal: the latest line of every row, in manifest order.

Streaming: the index says where each row's latest journal line is (12 bytes a row), the lines
are read one by one and written in batches, so memory does not grow with the answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.result import RESULTS_SCHEMA
from batchrun.store.index import JournalIndex

_TIMESTAMP_FIELDS = ("started_at", "finished_at")
_COLUMNS = RESULTS_SCHEMA.names
BATCH_ROWS = 2000


def iter_latest(journal_path: Path, index: JournalIndex
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(manifest line, journal record) of the latest record of every row, by manifest line,
    from an index loaded with ``keep_places``.

    Records written without a line (older journals) come last, with line 0.
    """
    offsets, lengths = index.offsets, index.lengths
    try:
        journal = open(journal_path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with journal:
        for line in range(1, len(offsets)):
            offset = offsets[line]
            if offset < 0:
                continue
            journal.seek(offset)
            record = _parse(journal.read(lengths[line]))
            if record is not None:
                yield line, record
        for _, offset, length in sorted(index.unlined.values(), key=lambda item: item[1]):
            journal.seek(offset)
            record = _parse(journal.read(length))
            if record is not None:
                yield 0, record


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the index said so, the bytes disagree: never fail a compaction for it
    return record if isinstance(record, dict) else None


def parquet_record(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record as a results row: schema columns, timestamps in microseconds."""
    row = {name: record.get(name) for name in _COLUMNS}
    for name in _TIMESTAMP_FIELDS:
        value = row[name]
        row[name] = int(value * 1_000_000) if isinstance(value, int | float) else None
    return row


def json_record(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record as an exported JSON object: schema columns, ISO-8601 UTC timestamps."""
    row = {name: record.get(name) for name in _COLUMNS}
    for name in _TIMESTAMP_FIELDS:
        value = row[name]
        row[name] = (
            datetime.fromtimestamp(value, UTC).isoformat() if isinstance(value, int | float)
            else None
        )
    return row


def file_metadata(metadata: dict[str, Any]) -> dict[bytes, bytes]:
    """Parquet key-value metadata: the whole of ``metadata`` as JSON under ``batchrun``, and
    each of its fields under its own key too (text as it is, anything else as JSON), so a
    reader that looks for ``model`` or ``totals`` finds them without knowing our layout."""
    flat = {key.encode(): value.encode() if isinstance(value, str)
            else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
            for key, value in metadata.items() if value is not None}
    return {**flat, b"batchrun": orjson.dumps(metadata, option=orjson.OPT_NON_STR_KEYS)}


def compact(latest: Iterable[tuple[int, dict[str, Any]]], results_path: Path,
            metadata: dict[str, Any]) -> int:
    """Write ``latest`` (``iter_latest``'s records) to results.parquet atomically; returns the
    number of rows."""
    schema = RESULTS_SCHEMA.with_metadata(file_metadata(metadata))
    # A name of our own: ``export`` may compact while the run itself finishes.
    tmp_path = results_path.with_name(f"{results_path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with pq.ParquetWriter(tmp_path, schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for _, record in latest:
                batch.append(parquet_record(record))
                if len(batch) >= BATCH_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    written += len(batch)
                    batch = []
            if batch or written == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
        os.replace(tmp_path, results_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return written
