"""CSV manifests, block by block with pyarrow's CSV reader: the header is checked once, before
any row is read, and each row follows the same rules as a JSONL line or a Parquet row.

CSV has no types, so none is guessed: every cell is text (an id ``007`` stays ``"007"``, where
type inference would make it 7). Quoted cells may hold commas and line breaks. An empty cell
is an empty string, except in the columns whose absence means something to a row's shape
(``_ABSENT_WHEN_EMPTY``): there it is no value, as a null is in Parquet, so one file can mix
shapes (a ``messages`` column left empty on the rows that have a ``prompt``). A cell that is
not UTF-8 is a row error naming the row and column; a row with more or fewer cells than the
header stops the file, naming the row (the preflight reads every row before anything is sent).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row, build_row
from batchrun.manifest.tabular import batch_records, check_column_names
from batchrun.manifest.template import Template

# Bytes parsed at a time: a batch of rows. One row must fit in a block (pyarrow's rule when
# cells may hold line breaks); media belong in files named by path, so rows stay far smaller.
BLOCK_BYTES = 16 * 1024 * 1024
_ABSENT_WHEN_EMPTY = ("id", "custom_id", "system", "media", "messages", "body", "method", "url")


class _Reading:
    """One pass over a CSV file: pyarrow's options, and the malformed row it met, if any
    (pyarrow's own message does not say which data row it was)."""

    def __init__(self, path: Path, names: list[str] | None = None) -> None:
        self.path = path
        self.bad_row: pacsv.InvalidRow | None = None
        self.read_options = pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False)
        self.parse_options = pacsv.ParseOptions(newlines_in_values=True,
                                                invalid_row_handler=self._invalid)
        # Bytes, not strings: a cell that is not UTF-8 becomes one row's error, not the file's.
        types = {name: pa.binary() for name in names or ()}
        self.convert_options = pacsv.ConvertOptions(column_types=types,
                                                    strings_can_be_null=False)

    def _invalid(self, row: pacsv.InvalidRow) -> str:
        self.bad_row = row
        return "error"

    def open(self) -> pacsv.CSVStreamingReader:
        try:
            return pacsv.open_csv(self.path, read_options=self.read_options,
                                  parse_options=self.parse_options,
                                  convert_options=self.convert_options)
        except (pa.ArrowException, OSError) as exc:
            raise self.error(0, exc) from None

    def error(self, rows_read: int, exc: Exception) -> InputError:
        bad = self.bad_row
        if bad is not None:
            # pyarrow counts the header as row 1; the manifest's rows are numbered from 1.
            where = f"row {bad.number - 1}" if bad.number else f"a row after row {rows_read}"
            return InputError(
                f"manifest {self.path}: {where} has {bad.actual_columns} cells where the header "
                f"has {bad.expected_columns}: {bad.text[:80]!r} (quote a cell that holds a "
                'comma or a line break: "a, b")')
        after = f" after row {rows_read}" if rows_read else ""
        return InputError(f"manifest {self.path} is not a readable CSV file{after}: {exc}")


def csv_columns(path: Path) -> list[str]:
    """The header's column names; duplicates are an input error."""
    reader = _Reading(path).open()
    with contextlib.closing(reader):
        names: list[str] = reader.schema.names
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise InputError(f"manifest {path}: column(s) {', '.join(map(repr, twice))} appear "
                         "more than once in the header")
    return names


def check_csv_header(path: Path, job: JobSpec, template: Template | None) -> None:
    names = csv_columns(path)
    check_column_names(path, names, job, template, has_body="body" in names)


def iter_csv_records(path: Path,
                     done_lines: bytes | None = None) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(row number, the row's cells as bytes) of every row not marked done."""
    reading = _Reading(path, csv_columns(path))
    reader = reading.open()
    with contextlib.closing(reader):
        yield from batch_records(iter(reader), done_lines, reading.error)


def iter_csv(path: Path, job: JobSpec, template: Template | None,
             done_lines: bytes | None = None) -> Generator[Row, None, None]:
    for number, raw in iter_csv_records(path, done_lines):
        record: dict[str, str | None] = {}
        not_utf8 = []
        for name, value in raw.items():
            try:
                record[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                not_utf8.append(name)
        if not_utf8:
            row_id = record.get("id") or record.get("custom_id") or f"row-{number}"
            yield Row(id=row_id, line=number, error=f"row {number}: column(s) "
                      f"{', '.join(map(repr, not_utf8))} not valid UTF-8")
            continue
        for name in _ABSENT_WHEN_EMPTY:
            if record.get(name) == "":
                record[name] = None
        yield build_row(record, number, "row", job, template)
