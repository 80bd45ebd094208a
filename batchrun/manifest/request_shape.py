"""What of a job shapes the requests it sends (pure): the fields a run directory remembers, so
that a resume under another job is noticed instead of mixing two jobs' answers in one result.

The shape is every job field that goes into a request body or decides what it holds: the
model, the system prompt, the prompt template, the media columns and the media root (a
relative path means another file under another root), the body's settings (stream,
include_thoughts, reasoning_effort, google_search) and ``extra_body`` (where a
``response_format`` schema goes), the columns a row's own settings are read from
(``columns``), the output schema and how it is asked for, plus the endpoint the requests go
to. Fields that change how
or how fast requests are sent (concurrency, limits, timeouts, the budget, size limits that only
refuse a row) are not part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchrun.manifest.job import JobSpec

# The JobSpec fields of the shape, in the order a change is named.
SHAPING_FIELDS = ("model", "system", "prompt_template", "media_columns", "stream",
                  "include_thoughts", "reasoning_effort", "google_search", "extra_body",
                  "media_root", "columns", "output_schema", "schema_response_format",
                  "stream_usage")
ENDPOINT = "endpoint"
_DEFAULTS = JobSpec().describe()


def request_shape(job: JobSpec, endpoint: str) -> dict[str, Any]:
    """The shape of ``job``'s requests sent to ``endpoint`` (its URL, or the name cache keys
    give it: the embedded emulator's port changes every run, its answers do not)."""
    return shape_of(job.describe(), endpoint)


def shape_of(described: Mapping[str, Any], endpoint: str | None) -> dict[str, Any]:
    """The shape from a job as ``JobSpec.describe()`` wrote it (run.json's ``job``)."""
    shape = {name: described.get(name, _DEFAULTS[name]) for name in SHAPING_FIELDS}
    shape["media_columns"] = list(shape["media_columns"] or ())
    shape["extra_body"] = dict(shape["extra_body"] or {})
    shape["columns"] = dict(shape["columns"] or {})
    root = shape["media_root"]
    shape["media_root"] = str(Path(root).resolve()) if root else None
    shape[ENDPOINT] = endpoint.rstrip("/") if endpoint else None
    return shape


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The fields whose value differs between two shapes, in ``SHAPING_FIELDS`` order."""
    return [name for name in (*SHAPING_FIELDS, ENDPOINT) if before.get(name) != after.get(name)]
