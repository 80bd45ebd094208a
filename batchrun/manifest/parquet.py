"""Parquet manifests, batch by batch: the schema is checked once, before any row is read."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.jsonl import Position
from batchrun.manifest.rows import Row, build_row, drop_nulls
from batchrun.manifest.settings import column_of
from batchrun.manifest.tabular import batch_records, check_column_names
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
    has_body = "body" in names and _type_kind(schema.field("body").type) in ("struct", "string")
    check_column_names(path, schema.names, job, template, has_body=has_body)
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
    start: Position | None = None,
) -> Generator[Row, None, None]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    # Struct columns whose absent fields Arrow gives back as None (dropped before use).
    nested = {"messages", "body", column_of(job.columns, "messages")}
    with contextlib.closing(parquet):
        groups, before = _groups_from(parquet, start.line if start is not None else 0)
        batches = iter(parquet.iter_batches(batch_size=batch_size, row_groups=groups))
        for number, record in batch_records(batches, done_lines, partial(_read_error, path),
                                            before):
            for key in nested:
                if isinstance(record.get(key), list | dict):
                    record[key] = drop_nulls(record[key])
            yield build_row(record, number, "row", job, template)


def _groups_from(parquet: pq.ParquetFile, rows_before: int) -> tuple[list[int], int]:
    """The row groups from the one holding row ``rows_before + 1`` on, and the rows before
    that group: a read that starts late does not decode the groups before it."""
    metadata = parquet.metadata
    passed = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if passed + rows > rows_before:
            return list(range(group, metadata.num_row_groups)), passed
        passed += rows
    return [], passed


def _read_error(path: Path, rows_read: int, exc: Exception) -> InputError:
    return InputError(f"manifest {path}: cannot read rows after row {rows_read}: {exc}")
