"""Which JSON Schema a row's answer must fit: the job's ``output_schema`` file, or the row's own
(an ``output_schema`` column holding a schema object, a JSON string of one, or a file path).

Schema files are read once each (cached by path) and checked as JSON Schemas when read: a job
whose schema file is missing or invalid is an input error before anything is sent; a row whose
own schema is bad is that row's error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.settings import column_of
from batchrun.manifest.template import BadRow


def check_schema(schema: Any, where: str) -> dict[str, Any]:
    """``schema`` if it is a JSON Schema object, else ValueError naming ``where``."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON Schema object, not {type(schema).__name__}")
    # Imported here: jobs without a schema (most) do not pay for importing it at start-up.
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"{where} is not a valid JSON Schema: {exc.message}") from None
    return schema


@functools.lru_cache(maxsize=64)
def load_schema(path: str) -> dict[str, Any]:
    """The schema in the file at ``path`` (read and checked once); ValueError if it cannot be."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"output_schema {path} cannot be read: {exc.strerror or exc}") from None
    try:
        schema = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"output_schema {path} is not JSON: {exc}") from None
    return check_schema(schema, f"output_schema {path}")


def job_schema(job: JobSpec) -> dict[str, Any] | None:
    """The job's ``output_schema``; InputError when its file is missing or not a schema."""
    if job.output_schema is None:
        return None
    try:
        return load_schema(job.output_schema)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def row_schema(record: Mapping[str, Any], job: JobSpec) -> dict[str, Any] | None:
    """The schema ``record``'s answer must fit: its own column's, else the job's."""
    column = column_of(job.columns, "output_schema")
    own = record.get(column)
    if own is None:
        return job_schema(job)
    try:
        if isinstance(own, str) and own.lstrip().startswith("{"):
            return _inline(own, column)
        if isinstance(own, str):
            return load_schema(own)
        return check_schema(dict(own) if isinstance(own, Mapping) else own, f"column {column}")
    except ValueError as exc:
        raise BadRow(f"column {column}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _inline(text: str, column: str) -> dict[str, Any]:
    """A schema written inline as JSON text (rows often repeat it: parsed once)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return check_schema(value, f"column {column}")
