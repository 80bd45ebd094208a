"""results.parquet from the journal: the latest line of every row, in manifest order.

Streaming: the index says where each row's latest journal line is (12 bytes a row), the lines
are read one by one and written in batches, so memory does not grow with the answers. A batch
of lines goes to Arrow's JSON reader whole (the schema's columns taken, the journal-only fields
passed over): a third of the CPU of parsing each line into a dict and building the table from
the dicts, which is still the way for a batch the reader refuses (a torn or odd line), with
the same result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from batchrun.core.result import RESULTS_SCHEMA
from batchrun.store.index import JournalIndex

_TIMESTAMP_FIELDS = ("started_at", "finished_at")
_COLUMNS = RESULTS_SCHEMA.names
BATCH_ROWS = 2000
# The journal's view of the schema: timestamps are epoch seconds there.
_JOURNAL_SCHEMA = pa.schema([
    pa.field(f.name, pa.float64() if pa.types.is_timestamp(f.type) else f.type)
    for f in RESULTS_SCHEMA
])
_JSON_PARSE = pa_json.ParseOptions(explicit_schema=_JOURNAL_SCHEMA,
                                   unexpected_field_behavior="ignore")


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


def iter_latest_lines(journal_path: Path, index: JournalIndex) -> Iterator[bytes]:
    """``iter_latest``'s journal lines, unparsed (each ends with a newline)."""
    offsets, lengths = index.offsets, index.lengths
    try:
        journal = open(journal_path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with journal:
        seek, read = journal.seek, journal.read
        for line in range(1, len(offsets)):
            offset = offsets[line]
            if offset < 0:
                continue
            seek(offset)
            raw = read(lengths[line])
            yield raw if raw[-1:] == b"\n" else raw + b"\n"
        for _, offset, length in sorted(index.unlined.values(), key=lambda item: item[1]):
            seek(offset)
            raw = read(length)
            yield raw if raw[-1:] == b"\n" else raw + b"\n"


def lines_table(lines: list[bytes], schema: pa.Schema = RESULTS_SCHEMA) -> pa.Table:
    """The results rows of journal lines, as ``parquet_record`` of each parsed line makes them
    (a line that is not a JSON object is left out)."""
    if lines:
        try:
            table = pa_json.read_json(
                pa.py_buffer(b"".join(lines)),
                read_options=pa_json.ReadOptions(use_threads=False,
                                                 block_size=sum(map(len, lines)) + 1),
                parse_options=_JSON_PARSE)
        except (pa.ArrowException, ValueError):
            table = None  # a line the reader refuses: each line on its own, as it always was
        if table is not None and table.num_rows == len(lines):
            columns = []
            for field in RESULTS_SCHEMA:
                column = table.column(field.name)
                if pa.types.is_timestamp(field.type):  # int(seconds * 1e6), as parquet_record
                    column = pc.cast(pc.multiply(column, 1_000_000.0), pa.int64(),
                                     safe=False).cast(field.type)
                columns.append(column)
            return pa.Table.from_arrays(columns, schema=schema)
    records = (_parse(raw) for raw in lines)
    return pa.Table.from_pylist([parquet_record(record) for record in records
                                 if record is not None], schema=schema)


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


def compact_lines(lines: Iterable[bytes], results_path: Path,
                  metadata: dict[str, Any]) -> int:
    """``compact`` from ``iter_latest_lines``: the same file, the lines read in batches."""
    schema = RESULTS_SCHEMA.with_metadata(
        {b"batchrun": orjson.dumps(metadata, option=orjson.OPT_NON_STR_KEYS)}
    )
    tmp_path = results_path.with_name(f"{results_path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with pq.ParquetWriter(tmp_path, schema, compression="zstd") as writer:
            batch: list[bytes] = []
            for raw in lines:
                batch.append(raw)
                if len(batch) >= BATCH_ROWS:
                    table = lines_table(batch, schema)
                    if table.num_rows:
                        writer.write_table(table)
                        written += table.num_rows
                    batch = []
            if batch or written == 0:
                table = lines_table(batch, schema)
                if table.num_rows or written == 0:
                    writer.write_table(table)
                    written += table.num_rows
        os.replace(tmp_path, results_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return written


def compact(latest: Iterable[tuple[int, dict[str, Any]]], results_path: Path,
            metadata: dict[str, Any]) -> int:
    """Write ``latest`` (``iter_latest``'s records) to results.parquet atomically; returns the
    number of rows."""
    schema = RESULTS_SCHEMA.with_metadata(
        {b"batchrun": orjson.dumps(metadata, option=orjson.OPT_NON_STR_KEYS)}
    )
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
