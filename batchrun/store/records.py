"""One record of ``journal.idx`` per journal line: its layout, its named fields, row states.

A record is little-endian, 56 bytes: where its journal line is (offset, length), the row's
state, the manifest line it answers, its tokens and credits, and the first 8 bytes of its cache
key. ``FIELDS`` is the one description of that layout: the ``struct`` format, the ``Entry``
tuple and the column views the index reads whole files with are all derived from it, and
``tests/test_store.py`` pins the bytes, so the format on disk cannot drift silently.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from batchrun.core.result import STATUS_OK, RowResult
from batchrun.store.keys import key_prefix

# (name, struct code); a name of None is padding. Order is the on-disk order.
FIELDS: tuple[tuple[str | None, str], ...] = (
    ("offset", "Q"),  # of the journal line, in bytes
    ("length", "I"),  # of the journal line, newline included
    ("state", "B"),  # STATE_* below
    (None, "3x"),
    ("line", "Q"),  # manifest line (JSONL line or Parquet row number); 0: none recorded
    ("prompt_tokens", "I"),
    ("completion_tokens", "I"),
    ("reasoning_tokens", "I"),
    (None, "4x"),
    ("credits", "d"),
    ("key", "Q"),  # first 8 bytes of the cache key (0: none)
)
RECORD = struct.Struct("<" + "".join(code for _, code in FIELDS))


class Entry(NamedTuple):
    """One record, unpacked: ``RECORD.pack(*entry)`` writes it."""

    offset: int
    length: int
    state: int
    line: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    credits: float
    key: int


def _field_offsets() -> dict[str, tuple[int, str]]:
    """name → (byte offset in a record, struct code)."""
    places: dict[str, tuple[int, str]] = {}
    layout = "<"
    for name, code in FIELDS:
        if name is not None:
            places[name] = (struct.calcsize(layout), code)
        layout += code
    return places


FIELD_AT = _field_offsets()
if tuple(FIELD_AT) != Entry._fields:  # pragma: no cover - caught at import
    raise AssertionError("Entry's fields must follow FIELDS")


def column(data: memoryview, name: str) -> memoryview:
    """One field of every record in ``data`` (whole records, native little-endian), as a
    strided view taken in C: ``column(data, "line")[i]`` is the line of record ``i``."""
    offset, code = FIELD_AT[name]
    if code == "B":
        return data[offset::RECORD.size]
    width = struct.calcsize(code)
    view: memoryview = data.cast(code)  # type: ignore[call-overload]
    return view[offset // width::RECORD.size // width]


def field_of(data: memoryview, at: int, name: str) -> Any:
    """One field of record number ``at`` in ``data``."""
    offset, code = FIELD_AT[name]
    return struct.unpack_from("<" + code, data, at * RECORD.size + offset)[0]


STATE_NONE = 0
STATE_OK = 1
STATE_FAILED = 2  # a final error: resent only with --retry-failed
STATE_RETRYABLE = 3  # retries ran out on a retryable error: a plain resume sends it again
STATE_REUSED = 4  # ok, answer copied from an earlier run (--reuse): nothing paid here
STATE_OK_NO_USAGE = 5  # ok, but the answer carried no usage: its cost is unknown
# ok, but the answer ended for another reason than "stop" (length, content_filter,
# tool_calls …): resent by ``run --redo incomplete``. An answer that names no reason is "stop".
STATE_OK_INCOMPLETE = 6

OK_STATES = (STATE_OK, STATE_REUSED, STATE_OK_NO_USAGE, STATE_OK_INCOMPLETE)
ERROR_STATES = (STATE_FAILED, STATE_RETRYABLE)
# States whose latest journal line the index keeps the place of (to read its error code or
# its finish reason).
PLACED_STATES = (*ERROR_STATES, STATE_OK_INCOMPLETE)
COMPLETE_FINISH = (None, "stop")
_U32_MAX = 2**32 - 1




def state_of(record: dict[str, Any]) -> int:
    return _state(record.get("status"), record.get("reused_from"), record.get("error_code"),
                  record.get("retryable"), record.get("finish_reason"))


def _state(status: Any, reused_from: Any, error_code: Any, retryable: Any,
           finish_reason: Any = None) -> int:
    if status == STATUS_OK:
        if reused_from:
            return STATE_REUSED
        if error_code == "missing_usage":
            return STATE_OK_NO_USAGE  # its cost unknown first: the warning is about money
        return STATE_OK if finish_reason in COMPLETE_FINISH else STATE_OK_INCOMPLETE
    return STATE_RETRYABLE if retryable else STATE_FAILED


def _count(value: Any) -> int:
    return min(value, _U32_MAX) if isinstance(value, int) and value > 0 else 0


def entry_for(record: dict[str, Any], offset: int, length: int, key: int) -> Entry:
    """The index record of one journal line (``key``: its cache key's prefix)."""
    credits = record.get("credits")
    if credits is None:
        credits = record.get("credits_computed")
    return _entry(offset, length, state_of(record), record.get("line"),
                  record.get("prompt_tokens"), record.get("completion_tokens"),
                  record.get("reasoning_tokens"), credits, key)


def entry_for_result(result: RowResult, offset: int, length: int) -> Entry:
    """``entry_for`` of a result about to be journaled, read from its attributes (the same
    entry as from its record: the append path runs for every row, without a dict)."""
    credits = result.credits if result.credits is not None else result.credits_computed
    state = _state(result.status, result.reused_from, result.error_code, result.retryable,
                   result.finish_reason)
    return _entry(offset, length, state, result.line, result.prompt_tokens,
                  result.completion_tokens, result.reasoning_tokens, credits,
                  key_prefix(result.cache_key))


def _entry(offset: int, length: int, state: int, line: Any, prompt: Any, completion: Any,
           reasoning: Any, credits: Any, key: int) -> Entry:
    line = line if isinstance(line, int) and line > 0 else 0
    if state == STATE_REUSED:  # paid by the earlier run: nothing to total here
        return Entry(offset, length, state, line, 0, 0, 0, 0.0, key)
    return Entry(offset, length, state, line, _count(prompt), _count(completion),
                 _count(reasoning), float(credits) if isinstance(credits, int | float) else 0.0,
                 key)


def pack(entry: Entry) -> bytes:
    return RECORD.pack(*entry)


