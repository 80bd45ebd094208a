"""``export --flatten``: the top-level fields of the job's ``output_schema`` as columns of their
own, typed by the schema, beside the results (read from each row's ``parsed`` JSON).

JSON Schema type → column: string → string (``format: date`` → date), integer → int64,
number → float64, boolean → bool, array / object → JSON text. A type list with ``null``
takes the other type. A field named like a results column gets an ``output_`` prefix. Rows
without a parsed answer (errors, ``schema_error``) get nulls. Streamed batch by batch.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.core.result import RESULTS_SCHEMA
from batchrun.manifest.schemas import load_schema

_RESULT_NAMES = frozenset(RESULTS_SCHEMA.names)


@dataclass(frozen=True)
class FlatColumn:
    field: str  # the schema's property
    name: str  # the column
    type: pa.DataType
    kind: str  # how a value is converted: "plain", "date" or "json"


def run_schema(info: dict[str, Any]) -> dict[str, Any]:
    """The run's ``output_schema`` (from run.json's job); InputError without one."""
    path = (info.get("job") or {}).get("output_schema")
    if not path:
        raise InputError("--flatten writes the fields of the job's output_schema, and this "
                         "run's job has none")
    try:
        return load_schema(str(path))
    except ValueError as exc:
        raise InputError(f"--flatten: {exc}") from None


def flat_columns(schema: dict[str, Any]) -> list[FlatColumn]:
    """One column per top-level property of an object schema."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise InputError("--flatten needs an output_schema of an object with properties")
    columns = []
    for field, sub in properties.items():
        arrow_type, kind = _arrow_type(sub if isinstance(sub, dict) else {})
        name = f"output_{field}" if field in _RESULT_NAMES else field
        columns.append(FlatColumn(field, name, arrow_type, kind))
    return columns


def _arrow_type(schema: dict[str, Any]) -> tuple[pa.DataType, str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        kind = "string" if values and all(isinstance(v, str) for v in values) else None
    if kind == "string":
        return (pa.date32(), "date") if schema.get("format") == "date" else (pa.string(), "plain")
    simple = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
    if kind in simple:
        return simple[kind], "plain"
    return pa.string(), "json"


def _convert(value: Any, column: FlatColumn) -> Any:
    """A parsed value as the column's type; None when it is not of that type."""
    if value is None:
        return None
    if column.kind == "json":
        return orjson.dumps(value).decode()
    if column.kind == "date":
        try:
            return dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None
    if isinstance(value, bool) != (column.type == pa.bool_()):
        return None  # JSON true is no number, and 1 is no boolean
    if column.type == pa.string():
        return value if isinstance(value, str) else None
    if column.type == pa.int64():
        return value if isinstance(value, int) else None
    if column.type == pa.float64():
        return float(value) if isinstance(value, int | float) else None
    return value


def flat_values(parsed: str | None, columns: list[FlatColumn]) -> dict[str, Any]:
    """The column values of one row's ``parsed`` JSON text."""
    try:
        value = orjson.loads(parsed) if parsed else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return {column.name: None for column in columns}
    return {column.name: _convert(value.get(column.field), column) for column in columns}


def flatten_file(path: Path, schema: dict[str, Any], *, parquet: bool) -> None:
    """Add the schema's columns to an exported Parquet (else JSONL) file, in place."""
    columns = flat_columns(schema)
    tmp = path.with_name(path.name + ".flat")
    try:
        if parquet:
            _flatten_parquet(path, tmp, columns)
        else:
            _flatten_jsonl(path, tmp, columns)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flatten_parquet(source: Path, target: Path, columns: list[FlatColumn]) -> None:
    reader = pq.ParquetFile(source)
    taken = set(reader.schema_arrow.names)
    clashes = [c.name for c in columns if c.name in taken]
    if clashes:
        raise InputError(f"--flatten: column(s) {', '.join(clashes)} already in the export")
    schema = pa.schema([*reader.schema_arrow, *(pa.field(c.name, c.type) for c in columns)],
                       metadata=reader.schema_arrow.metadata)
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for batch in reader.iter_batches(batch_size=2000):
            rows = [flat_values(parsed, columns) for parsed in batch.column("parsed").to_pylist()]
            arrays = [*batch.columns, *(pa.array([row[c.name] for row in rows], type=c.type)
                                        for c in columns)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    reader.close()


def _flatten_jsonl(source: Path, target: Path, columns: list[FlatColumn]) -> None:
    with open(source, "rb") as lines, open(target, "wb") as out:
        for record in _records(lines):
            values = flat_values(record.get("parsed"), columns)
            for name, value in values.items():
                if isinstance(value, dt.date):
                    values[name] = value.isoformat()
            out.write(orjson.dumps({**record, **values}) + b"\n")


def _records(lines: Any) -> Iterator[dict[str, Any]]:
    for raw in lines:
        if raw.strip():
            yield orjson.loads(raw)
