"""What the column formats (Parquet, CSV) share: the checks of their header before any row is
read, and the walk over record batches that passes over the rows a resume has done."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import ID_KEYS, NEEDS
from batchrun.manifest.settings import column_of
from batchrun.manifest.template import Template


def check_column_names(path: Path, names: Sequence[str], job: JobSpec,
                       template: Template | None, *, has_body: bool) -> None:
    """An id column, columns a row can be made of, and every column the job names."""
    present = set(names)
    found = ", ".join(names) or "(none)"
    if not present & set(ID_KEYS):
        raise InputError(f"manifest {path} has no `id` or `custom_id` column; columns: {found}")
    if not (has_body or template or present & {column_of(job.columns, "messages"), "prompt"}):
        raise InputError(f"manifest {path}: no usable columns; {NEEDS}. Columns: {found}")
    wanted = list(template.columns if template else ()) + list(job.media_columns)
    missing = [name for name in dict.fromkeys(wanted) if name not in present]
    if missing:
        raise InputError(
            f"manifest {path}: the job names column(s) {', '.join(map(repr, missing))}, "
            f"which it lacks; columns: {found}"
        )


def batch_records(
    batches: Iterator[pa.RecordBatch],
    done_lines: bytes | None,
    read_error: Callable[[int, Exception], InputError],
    row_no: int = 0,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, record) of every row not marked done in ``done_lines``; a batch
    whose rows are all done is never turned into Python objects. A failure to read a batch
    becomes ``read_error(rows read so far, the exception)``. ``row_no``: the rows before the
    first batch (a read that starts at a later row group)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise read_error(row_no, exc) from None
        first = row_no + 1
        row_no += batch.num_rows
        numbers: Sequence[int] = range(first, row_no + 1)
        if done_lines is not None:
            window = done_lines[first : row_no + 1]
            if len(window) == batch.num_rows and window.find(0) < 0:
                continue
            keep = [at for at in range(batch.num_rows) if at >= len(window) or not window[at]]
            if len(keep) < batch.num_rows:
                batch = batch.take(pa.array(keep, type=pa.int64()))
                numbers = [first + at for at in keep]
        yield from zip(numbers, batch.to_pylist(), strict=True)
