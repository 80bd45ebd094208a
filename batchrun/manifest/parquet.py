"""Parquet manifests, batch by batch: the schema is checked once, before any row is read."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import ID_KEYS, NEEDS, Row, build_row, drop_nulls
from batchrun.manifest.settings import column_of
from batchrun.manifest.template import Template

_COLUMN_RULES: dict[str, tuple[str, ...]] = {
    # column: what its Arrow type may be
    "id": ("string", "integer"),
    "custom_id": ("string", "integer"),
    "prompt": ("string",),
    "system": ("string",),
    "messages": ("string", "list"),
    "media": ("string", "list"),
}


def _type_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        return _type_kind(arrow_type.value_type)
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "list"
    if pa.types.is_struct(arrow_type):
        return "struct"
    return str(arrow_type)


def check_parquet_schema(path: Path, job: JobSpec, template: Template | None) -> None:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    names = set(schema.names)
    found = ", ".join(schema.names) or "(none)"
    if not names & set(ID_KEYS):
        raise InputError(f"manifest {path} has no `id` or `custom_id` column; columns: {found}")
    has_body = "body" in names and _type_kind(schema.field("body").type) in ("struct", "string")
    messages = column_of(job.columns, "messages")
    if not (has_body or template or names & {messages, "prompt"}):
        raise InputError(f"manifest {path}: no usable columns; {NEEDS}. Columns: {found}")
    for name, allowed in _COLUMN_RULES.items():
        if name not in names:
            continue
        arrow_type = schema.field(name).type
        kind = _type_kind(arrow_type)
        if kind != "null" and kind not in allowed:
            raise InputError(
                f"manifest {path}: column {name!r} has type {arrow_type}; "
                f"it must hold {' or '.join(allowed)} values"
            )
    wanted = list(template.columns if template else ()) + list(job.media_columns)
    missing = [name for name in dict.fromkeys(wanted) if name not in names]
    if missing:
        raise InputError(
            f"manifest {path}: the job names column(s) {', '.join(map(repr, missing))}, "
            f"which it lacks; columns: {found}"
        )
    for name in job.media_columns:
        arrow_type = schema.field(name).type
        if _type_kind(arrow_type) not in ("string", "list", "null"):
            raise InputError(
                f"manifest {path}: media column {name!r} has type {arrow_type}; "
                "it must hold a path/URL string or a list of them"
            )


def iter_parquet(
    path: Path,
    job: JobSpec,
    template: Template | None,
    batch_size: int,
    done_lines: bytes | None = None,
) -> Generator[Row, None, None]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    row_no = 0
    # Struct columns whose absent fields Arrow gives back as None (dropped before use).
    nested = {"messages", "body", column_of(job.columns, "messages")}
    with contextlib.closing(parquet):
        batch_iter = iter(parquet.iter_batches(batch_size=batch_size))
        while True:
            try:
                batch = next(batch_iter)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise InputError(
                    f"manifest {path}: cannot read rows after row {row_no}: {exc}"
                ) from None
            first = row_no + 1
            row_no += batch.num_rows
            numbers: list[int] | range = range(first, row_no + 1)
            if done_lines is not None:
                window = done_lines[first : row_no + 1]
                if len(window) == batch.num_rows and window.find(0) < 0:
                    continue
                keep = [at for at in range(batch.num_rows) if at >= len(window) or not window[at]]
                if len(keep) < batch.num_rows:
                    batch = batch.take(pa.array(keep, type=pa.int64()))
                    numbers = [first + at for at in keep]
            for number, record in zip(numbers, batch.to_pylist(), strict=True):
                for key in nested:
                    if isinstance(record.get(key), list | dict):
                        record[key] = drop_nulls(record[key])
                yield build_row(record, number, f"row {number}", f"row-{number}", job, template)
