"""Streaming manifest readers: JSONL, Parquet, CSV and OpenAI-batch lines become ``Row`` values.

A manifest is never loaded whole: JSONL is read line by line, Parquet and CSV batch by batch. A row
that cannot be used becomes ``Row(error=...)`` (a row error; the run goes on). Only problems of
the whole file raise ``InputError``: unknown format, unreadable, duplicate ids, a bad
``prompt_template``, Parquet or CSV columns that cannot work.

How one record becomes a ``Row`` is ``rows``'s part; the formats are ``jsonl``, ``parquet`` and
``csv``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.manifest.csv import check_csv_header, iter_csv, iter_csv_records
from batchrun.manifest.job import JobSpec
from batchrun.manifest.jsonl import MAX_LINE_BYTES, UTF8_BOM, Position, iter_jsonl, read_lines
from batchrun.manifest.parquet import check_parquet_schema, iter_parquet
from batchrun.manifest.rows import Row
from batchrun.manifest.template import Template, compile_template

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv",)
_READ_CHUNK = 1024 * 1024  # bytes read at a time to hash or count a file








# --------------------------------------------------------------------------- public functions


def manifest_format(path: Path) -> str:
    """``"jsonl"``, ``"parquet"`` or ``"csv"`` by extension; anything else is an input
    error."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    known = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES)
    raise InputError(f"manifest {path}: unknown extension {suffix or '(none)'!r}; use {known}")


def iter_rows(
    path: Path,
    job: JobSpec,
    *,
    batch_size: int = 4096,
    check_duplicates: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    done_lines: bytes | None = None,
    start: Position | None = None,
) -> Iterator[Row]:
    """Stream the rows of a manifest. File-level problems raise ``InputError`` at once.

    ``done_lines[n] == 1``: line n (JSONL) or row n (Parquet or CSV, 1-based) is passed over
    unparsed, which is how a resume walks past the rows already done. ``start``: begin near
    that line — a JSONL file just after it (at its byte offset), Parquet at the start of the
    row group holding the next row, CSV just after it (read past).
    """
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    template = compile_template(job.prompt_template)
    if fmt == "parquet":
        check_parquet_schema(path, job, template)
    if fmt == "csv":
        check_csv_header(path, job, template)
    rows = _source(path, fmt, job, template, batch_size, max_line_bytes, done_lines, start)
    if not check_duplicates:
        return rows
    return _check_unique(
        rows,
        rescan=lambda: _source(path, fmt, job, template, batch_size, max_line_bytes),
        unit="lines" if fmt == "jsonl" else "rows",
    )


def manifest_fingerprint(path: Path) -> str:
    """sha256 hex of the file's bytes, read in chunks."""
    path = Path(path)
    _check_readable(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def count_rows(path: Path) -> int:
    """Rows in the manifest: Parquet metadata, the rows of a CSV file (read through: a quoted
    cell may hold line breaks), or the non-blank lines of a JSONL file."""
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    if fmt == "csv":
        return sum(1 for _ in iter_csv_records(path))
    if fmt == "parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    rows = 0
    line_has_text = False
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            pieces = chunk.split(b"\n")
            # Every piece but the last ends a line; the last may go on in the next chunk.
            for piece in pieces[:-1]:
                if line_has_text or (piece and not piece.isspace()):
                    rows += 1
                line_has_text = False
            tail = pieces[-1]
            line_has_text = line_has_text or bool(tail and not tail.isspace())
    return rows + (1 if line_has_text else 0)


def iter_records(path: Path, *, batch_size: int = 4096) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, the row as written) for every row that is an object: the
    manifest's own columns, for joining results back onto them (``export --with-input``)."""
    path = Path(path)
    fmt = manifest_format(path)
    if fmt == "csv":
        for row_no, cells in iter_csv_records(path):
            yield row_no, {name: value.decode("utf-8", "replace") for name, value in cells.items()}
        return
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        with contextlib.closing(parquet):
            row_no = 0
            for batch in parquet.iter_batches(batch_size=batch_size):
                for record in batch.to_pylist():
                    row_no += 1
                    yield row_no, record
        return
    with open(path, "rb") as f:
        for line_no, raw in read_lines(f, MAX_LINE_BYTES):
            if raw is None or not raw.strip():
                continue
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield line_no, record




# --------------------------------------------------------------------------- file checks


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if not path.is_file():
        raise InputError(f"manifest {path} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"manifest {path} cannot be read: {exc.strerror or exc}") from None


def _source(
    path: Path,
    fmt: str,
    job: JobSpec,
    template: Template | None,
    batch_size: int,
    max_line_bytes: int,
    done_lines: bytes | None = None,
    start: Position | None = None,
) -> Generator[Row, None, None]:
    if fmt == "jsonl":
        return iter_jsonl(path, job, template, max_line_bytes, done_lines, start)
    if fmt == "csv":
        return _after(iter_csv(path, job, template, done_lines), start)
    return iter_parquet(path, job, template, batch_size, done_lines, start)


def _after(rows: Generator[Row, None, None], start: Position | None
           ) -> Generator[Row, None, None]:
    """The rows after ``start`` (a CSV file: a quoted cell may hold line breaks, so its rows
    are found by reading)."""
    for row in rows:
        if start is None or row.line > start.line:
            yield row


def _check_unique(
    rows: Generator[Row, None, None],
    rescan: Callable[[], Generator[Row, None, None]],
    unit: str,
) -> Iterator[Row]:
    """Pass rows through; raise on the second occurrence of an id.

    Only the ids' 64-bit hashes are kept (about 70 bytes a row). A hash already seen triggers
    a rescan up to this row to find the first line, which also rules out hash collisions.
    """
    seen: set[int] = set()
    with contextlib.closing(rows):
        for row in rows:
            key = hash(row.id)
            if key in seen:
                first = _first_line_of(rescan(), row.id, row.line)
                if first is not None:
                    raise InputError(f"duplicate id {row.id!r} on {unit} {first} and {row.line}")
            seen.add(key)
            yield row


def _first_line_of(rows: Generator[Row, None, None], row_id: str, before: int) -> int | None:
    with contextlib.closing(rows):
        for row in rows:
            if row.line >= before:
                return None
            if row.id == row_id:
                return row.line
    return None


# --------------------------------------------------------------------------- JSONL














# --------------------------------------------------------------------------- Parquet











# --------------------------------------------------------------------------- row shapes


























# --------------------------------------------------------------------------- prompt_template





