"""The journal's sidecar index: one fixed-size binary record per journal line.

``journal.jsonl`` stays the truth; ``journal.idx`` lets a resume learn what is done without
parsing gigabytes of answers. A record (little-endian, 56 bytes) holds where its journal line
is, the manifest line it answers, its state, its tokens and credits, and the first 8 bytes of
its cache key. Records are appended right after their journal line, so the index is a prefix of
the journal: on load, journal lines past the last indexed one (a crash between the two writes)
are parsed and indexed again, and an index that does not match its journal is rebuilt from it.

States are kept per manifest line (JSONL line number or Parquet row number) in a bytearray: one
byte a row, 1 MB for a million rows. Journal lines without a manifest line (written before
lines were recorded) are kept by id until a pass over the manifest resolves them.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchrun.result import STATUS_OK

RECORD = struct.Struct("<QIB3xQIII4xdQ")

STATE_NONE = 0
STATE_OK = 1
STATE_FAILED = 2  # a final error: resent only with --retry-failed
STATE_RETRYABLE = 3  # retries ran out on a retryable error: a plain resume sends it again
STATE_REUSED = 4  # ok, answer copied from an earlier run (--reuse): nothing paid here

OK_STATES = (STATE_OK, STATE_REUSED)
ERROR_STATES = (STATE_FAILED, STATE_RETRYABLE)
_U32_MAX = 2**32 - 1


Entry = tuple[int, int, int, int, int, int, int, float, int]
KeyOf = Callable[[dict[str, Any]], str | None]  # a journal record's cache key


def state_of(record: dict[str, Any]) -> int:
    if record.get("status") == STATUS_OK:
        return STATE_REUSED if record.get("reused_from") else STATE_OK
    return STATE_RETRYABLE if record.get("retryable") else STATE_FAILED


def key_prefix(cache_key: str | None) -> int:
    """The first 8 bytes of a hex cache key as an int (0: none); a bucket, never the proof."""
    if not cache_key or len(cache_key) < 16:
        return 0
    try:
        return int(cache_key[:16], 16)
    except ValueError:
        return 0


def _count(value: Any) -> int:
    return min(value, _U32_MAX) if isinstance(value, int) and value > 0 else 0


def entry_for(record: dict[str, Any], offset: int, length: int, key: int) -> Entry:
    """The index record of one journal line (``key``: its cache key's prefix)."""
    credits = record.get("credits")
    if credits is None:
        credits = record.get("credits_computed")
    line = record.get("line")
    return (
        offset,
        length,
        state_of(record),
        line if isinstance(line, int) and line > 0 else 0,
        _count(record.get("prompt_tokens")),
        _count(record.get("completion_tokens")),
        _count(record.get("reasoning_tokens")),
        float(credits) if isinstance(credits, int | float) else 0.0,
        key,
    )


def pack(entry: Entry) -> bytes:
    return RECORD.pack(*entry)


@dataclass
class JournalIndex:
    """Latest state of every manifest line, totals of what was paid, where errors are."""

    journal_path: Path
    states: bytearray = field(default_factory=bytearray)
    # Lines whose latest record is an error: where to read its code.
    failed_at: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Records without a manifest line (older journals): id -> (state, offset, length).
    unlined: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    records: int = 0
    torn_lines: int = 0
    # Sums over every record (all attempts, all sessions) except reused answers.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    # With ``keep_places``: where the latest record of each line is (compaction, export).
    keep_places: bool = False
    offsets: array[int] = field(default_factory=lambda: array("q"))
    lengths: array[int] = field(default_factory=lambda: array("L"))
    keys: array[int] = field(default_factory=lambda: array("Q"))

    # --- building ------------------------------------------------------------------------
    def add(self, entry: Entry, row_id: str | None = None) -> None:
        offset, length, state, line, prompt, completion, reasoning, credits, key = entry
        self.records += 1
        if state != STATE_REUSED:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.reasoning_tokens += reasoning
            self.credits += credits
        if not line:
            if row_id is not None:
                self.unlined[row_id] = (state, offset, length)
            return
        states = self.states
        if line >= len(states):
            states.extend(bytes(max(line + 1 - len(states), len(states) // 2)))
        states[line] = state
        if state in ERROR_STATES:
            self.failed_at[line] = (offset, length)
        elif self.failed_at:
            self.failed_at.pop(line, None)
        if self.keep_places:
            self._place(line, offset, length, key)

    def _place(self, line: int, offset: int, length: int, key: int) -> None:
        offsets = self.offsets
        if line >= len(offsets):
            grow = len(self.states) - len(offsets)
            offsets.extend([-1] * grow)
            self.lengths.extend([0] * grow)
            self.keys.extend([0] * grow)
        offsets[line] = offset
        self.lengths[line] = length
        self.keys[line] = key

    def add_packed(self, data: memoryview) -> list[tuple[int, int]]:
        """Add whole packed records; returns (offset, length) of those without a line."""
        unlined: list[tuple[int, int]] = []
        add = self.add
        for entry in RECORD.iter_unpack(data):
            if entry[3]:
                add(entry)
            else:
                unlined.append((entry[0], entry[1]))
        return unlined

    # --- questions -----------------------------------------------------------------------
    def state(self, line: int) -> int:
        return self.states[line] if 0 < line < len(self.states) else STATE_NONE

    def skip_line(self, *, retry_failed: bool) -> Callable[[int], bool]:
        """A fast predicate for the manifest reader: is this line done (not to be sent)?"""
        done = bytearray(256)
        for state in OK_STATES:
            done[state] = 1
        if not retry_failed:
            done[STATE_FAILED] = 1
        states = self.states
        size = len(states)

        def skip(line: int) -> bool:
            return line < size and done[states[line]] == 1

        return skip

    def is_done_row(self, row: Any, *, retry_failed: bool) -> bool:
        """Done by its line, or by its id for a record written without a line."""
        state = self.state(row.line)
        if state == STATE_NONE and self.unlined:
            state = self._resolve(row.id, row.line)
        return _done(state, retry_failed)

    def _resolve(self, row_id: str, line: int) -> int:
        """Move an id-only record onto its manifest line, now that the manifest told us."""
        found = self.unlined.pop(row_id, None)
        if found is None:
            return STATE_NONE
        state, offset, length = found
        if line >= len(self.states):
            self.states.extend(bytes(line + 1 - len(self.states)))
        self.states[line] = state
        if state in ERROR_STATES:
            self.failed_at[line] = (offset, length)
        if self.keep_places:
            self._place(line, offset, length, 0)
        return state

    def count(self, state: int) -> int:
        lined = self.states.count(bytes((state,))) if state else 0
        return lined + sum(1 for s, _, _ in self.unlined.values() if s == state)

    def count_done(self, *, retry_failed: bool) -> int:
        done = self.count(STATE_OK) + self.count(STATE_REUSED)
        return done if retry_failed else done + self.count(STATE_FAILED)

    def errors_by_code(self) -> dict[str, int]:
        """The error code of every row whose latest record is an error, read from the journal."""
        counts: dict[str, int] = {}
        places = list(self.failed_at.values())
        places += [(offset, length) for state, offset, length in self.unlined.values()
                   if state in ERROR_STATES]
        places.sort()
        with open(self.journal_path, "rb") as journal:
            for offset, length in places:
                journal.seek(offset)
                try:
                    record = orjson.loads(journal.read(length))
                except orjson.JSONDecodeError:
                    record = {}
                code = record.get("error_code") or "error"
                counts[code] = counts.get(code, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _done(state: int, retry_failed: bool) -> bool:
    if state in OK_STATES:
        return True
    return state == STATE_FAILED and not retry_failed


@dataclass
class LoadedIndex:
    index: JournalIndex
    valid_bytes: int  # how much of journal.idx is good (the rest is to be cut off)
    tail: list[Entry]  # records of journal lines past the index, to be appended to it


def load(
    journal_path: Path, index_path: Path, *, key_of: KeyOf, keep_places: bool = False
) -> LoadedIndex:
    """Read journal.idx, check it against the journal, index the journal lines it lacks."""
    index = JournalIndex(journal_path, keep_places=keep_places)
    try:
        journal_size = journal_path.stat().st_size
    except FileNotFoundError:
        return LoadedIndex(index, 0, [])
    try:
        data = index_path.read_bytes()
    except FileNotFoundError:
        data = b""
    whole = len(data) - len(data) % RECORD.size
    covered = 0
    if whole:
        last = RECORD.unpack_from(data, whole - RECORD.size)
        if _matches(journal_path, journal_size, last):
            covered = last[0] + last[1]
        else:
            whole = 0  # not this journal's index: rebuild it from the journal
    view = memoryview(data)[:whole]
    unlined = index.add_packed(view)
    if unlined:
        _add_unlined(index, unlined)
    tail = list(_parse_tail(index, covered, key_of))
    return LoadedIndex(index, whole, tail)


def _matches(journal_path: Path, journal_size: int, last: tuple[Any, ...]) -> bool:
    offset, length, state, line = last[0], last[1], last[2], last[3]
    if offset + length > journal_size or length == 0:
        return False
    with open(journal_path, "rb") as journal:
        journal.seek(offset)
        raw = journal.read(length)
    if not raw.endswith(b"\n"):
        return False
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and state_of(record) == state and (
        (record.get("line") or 0) == line
    )


def _add_unlined(index: JournalIndex, places: list[tuple[int, int]]) -> None:
    """Index records without a line by their id (read from the journal)."""
    with open(index.journal_path, "rb") as journal:
        for offset, length in places:
            journal.seek(offset)
            try:
                record = orjson.loads(journal.read(length))
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                index.add(entry_for(record, offset, length, 0), str(record["id"]))


def _parse_tail(index: JournalIndex, start: int, key_of: KeyOf) -> Iterator[Entry]:
    """Entries for the whole journal lines from ``start``; torn or damaged lines are skipped."""
    with open(index.journal_path, "rb") as journal:
        journal.seek(start)
        offset = start
        for raw in journal:
            length = len(raw)
            here = offset
            offset += length
            if not raw.endswith(b"\n"):
                index.torn_lines += 1  # a killed writer's half line; open_journal ends it
                continue
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                index.torn_lines += 1
                continue
            if not isinstance(record, dict) or "id" not in record:
                continue
            entry = entry_for(record, here, length, key_prefix(key_of(record)))
            index.add(entry, str(record["id"]))
            yield entry

