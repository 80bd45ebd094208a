"""Per-row settings: request fields a manifest row may set for itself, the job giving defaults.

A row may carry, as JSONL keys or Parquet columns, ``model``, ``reasoning_effort``,
``include_thoughts``, ``stream``, ``google_search`` (grounding on/off) and ``extra_body``
(merged over the job's), besides ``system`` and ``messages`` (read by ``rows``). A job may
name its own columns for them (``columns = {reasoning_effort = "effort"}``). A null value
leaves the job's default; a bad value is that row's error, naming the column and the value.

Pure: no I/O. Everything here is checked per row, so a bad row never stops the run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

REASONING_EFFORTS = ("low", "high")
# The request fields a row may set, in the order the request builder applies them.
REQUEST_SETTINGS = ("model", "reasoning_effort", "include_thoughts", "stream", "google_search",
                    "extra_body")
# Columns ``rows`` reads for the shape of a row, which the job may rename too.
SHAPE_SETTINGS = ("system", "messages")
# A row's own JSON Schema for its answer (an object, or a file path): ``manifest.schemas``.
OUTPUT_SETTINGS = ("output_schema",)
SETTINGS = (*REQUEST_SETTINGS, *SHAPE_SETTINGS, *OUTPUT_SETTINGS)
# Columns a row may hold whatever the job says (the shapes of ``rows``).
ROW_KEYS = ("id", "custom_id", "prompt", "system", "messages", "media", "body", "method", "url")
_BOOLEANS = {"true": True, "false": False}


class BadSetting(ValueError):
    """A row's setting column holds a value it cannot have (the message names the column)."""


@dataclass(frozen=True, slots=True)
class RowSettings:
    """What one row asks for itself; None: the job's value."""

    model: str | None = None
    reasoning_effort: str | None = None
    include_thoughts: bool | None = None
    stream: bool | None = None
    google_search: bool | None = None
    extra_body: Mapping[str, Any] | None = None


def check_column_map(columns: Mapping[str, Any]) -> str | None:
    """What is wrong with a job's ``columns`` table (setting → its column), else None."""
    for setting, column in columns.items():
        if setting not in SETTINGS:
            hint = did_you_mean(setting, SETTINGS)
            return (f"columns: {setting!r} is not a per-row setting"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; settings: {', '.join(SETTINGS)}")
        if not isinstance(column, str) or not column:
            return f"columns: {setting} must name a column (a non-empty string), not {column!r}"
    return None


def column_of(columns: Mapping[str, str], setting: str) -> str:
    """The column that holds ``setting``: the job's name for it, else the setting's own."""
    return columns.get(setting, setting)


@functools.lru_cache(maxsize=16)
def _request_columns(mapping: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    columns = dict(mapping)
    return tuple((setting, column_of(columns, setting)) for setting in REQUEST_SETTINGS)


def request_columns(columns: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(setting, column) of every request setting, under the job's names (cached per job)."""
    return _request_columns(tuple(sorted(columns.items())))


def row_settings(record: Mapping[str, Any], columns: Mapping[str, str]) -> RowSettings | None:
    """The settings ``record`` gives itself (None when it gives none); ``BadSetting`` names
    the first column whose value cannot be used."""
    found: dict[str, Any] = {}
    for setting, column in request_columns(columns):
        value = record.get(column)
        if value is not None:
            found[setting] = _checked(setting, column, value)
    return RowSettings(**found) if found else None


def _checked(setting: str, column: str, value: Any) -> Any:
    if setting == "model":
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise _bad(column, value, "must be a model name (a non-empty string)")
    if setting == "reasoning_effort":
        if value in REASONING_EFFORTS:
            return value
        raise _bad(column, value, f"must be one of {', '.join(REASONING_EFFORTS)}")
    if setting == "extra_body":
        return _object(column, value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise _bad(column, value, "must be true or false")


def _object(column: str, value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _bad(column, value, "must be an object (or a JSON string of one)") from None
    if not isinstance(value, Mapping):
        raise _bad(column, value, "must be an object (or a JSON string of one)")
    # Arrow structs give every field to every row; absent ones come back as None.
    return {key: item for key, item in value.items() if item is not None}


def _bad(column: str, value: Any, why: str) -> BadSetting:
    try:
        shown = orjson.dumps(value).decode()
    except TypeError:
        shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BadSetting(f"column {column} = {shown}: {why} (null keeps the job's value)")


# --- columns nobody reads -------------------------------------------------------------------
def used_columns(columns: Mapping[str, str], template_columns: Iterable[str] = (),
                 media_columns: Iterable[str] = (), more: Iterable[str] = ()) -> frozenset[str]:
    """Every column a job reads: the row shapes', the settings' (under the job's names), the
    template's, the media columns and ``more``."""
    return frozenset((*ROW_KEYS, *(column_of(columns, s) for s in SETTINGS),
                      *template_columns, *media_columns, *more))


@dataclass(frozen=True)
class UnusedColumn:
    name: str
    did_you_mean: str | None  # a setting or row key one edit away, when there is one


def unused_columns(seen: Iterable[str], used: frozenset[str]) -> list[UnusedColumn]:
    """The columns ``seen`` in the manifest that the job does not read, in the order seen,
    each with the setting (or row key) it is one edit away from, if any."""
    candidates = tuple(sorted(used))
    return [UnusedColumn(name, did_you_mean(name, candidates))
            for name in dict.fromkeys(seen) if name not in used]


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The first candidate one edit (insertion, deletion, substitution, swap of neighbours)
    away from ``name``."""
    return next((c for c in candidates if c != name and one_edit_apart(name, c)), None)


def one_edit_apart(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (len(diffs) == 2 and diffs[1] == diffs[0] + 1
                and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    at = next((i for i in range(len(short)) if short[i] != long[i]), len(short))
    return short[at:] == long[at + 1:]
