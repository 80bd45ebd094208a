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

import os
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from batchrun.store.keys import key_prefix
from batchrun.store.records import (
    ERROR_STATES,
    OK_STATES,
    PLACED_STATES,
    RECORD,
    STATE_FAILED,
    STATE_NONE,
    STATE_OK_INCOMPLETE,
    Entry,
    column,
    entry_for,
    field_of,
    pack,
    state_of,
)

_LOAD_RECORDS = 65536  # records read at a time (3.5 MB)
KeyOf = Callable[[dict[str, Any]], str | None]  # a journal record's cache key

@dataclass
class JournalIndex:
    """Latest state of every manifest line, totals of what was paid, where errors are."""

    journal_path: Path
    states: bytearray = field(default_factory=bytearray)
    # Lines whose latest record is an error or an incomplete answer (``PLACED_STATES``):
    # where to read its error code or finish reason.
    failed_at: dict[int, tuple[int, int]] = field(default_factory=dict)
    # ``run --redo incomplete``: ok rows whose answer was cut short count as not done.
    redo_incomplete: bool = False
    # Records without a manifest line (older journals): id -> (state, offset, length).
    unlined: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    records: int = 0
    torn_lines: int = 0
    # What was paid: sums over every record (all attempts, all sessions); a reused answer's
    # record holds zeros (the earlier run paid for it).
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
        if state in PLACED_STATES:
            self.failed_at[line] = (offset, length)
        elif self.failed_at:
            self.failed_at.pop(line, None)
        if self.keep_places:
            self._place(line, offset, length, key)

    def _place(self, line: int, offset: int, length: int, key: int) -> None:
        if line >= len(self.offsets):
            self._grow_places()
        self.offsets[line] = offset
        self.lengths[line] = length
        self.keys[line] = key

    def _grow_places(self) -> None:
        grow = len(self.states) - len(self.offsets)
        self.offsets.extend(array("q", [-1]) * grow)
        self.lengths.extend(array("L", [0]) * grow)
        self.keys.extend(array("Q", [0]) * grow)

    def add_packed(self, data: memoryview) -> list[tuple[int, int]]:
        """Add whole packed records; returns (offset, length) of those without a line.

        Columns of the records are taken in C (strided memoryviews, ``records.column``); only
        the scatter of states onto lines is a Python loop: about 0.1 s for a million records.
        """
        if sys.byteorder != "little":
            return self._add_packed_slowly(data)
        count = len(data) // RECORD.size
        if not count:
            return []
        lines = column(data, "line")
        state_bytes = bytes(column(data, "state"))
        size = max(lines) + 1
        states = self.states
        if len(states) < size:
            states.extend(bytes(size - len(states)))
        for line, state in zip(lines, state_bytes, strict=True):
            states[line] = state
        self.records += count
        self.prompt_tokens += sum(column(data, "prompt_tokens"))
        self.completion_tokens += sum(column(data, "completion_tokens"))
        self.reasoning_tokens += sum(column(data, "reasoning_tokens"))
        self.credits += sum(column(data, "credits"))
        offsets, lengths = column(data, "offset"), column(data, "length")
        errors: list[int] = []
        for state in PLACED_STATES:
            at = state_bytes.find(state)
            while at >= 0:
                errors.append(at)
                at = state_bytes.find(state, at + 1)
        for at in sorted(errors):
            self.failed_at[lines[at]] = (offsets[at], lengths[at])
        if self.keep_places:
            self._grow_places()
            place_offsets, place_lengths, place_keys = self.offsets, self.lengths, self.keys
            for line, offset, length, key in zip(lines, offsets, lengths, column(data, "key"),
                                                 strict=True):
                place_offsets[line] = offset
                place_lengths[line] = length
                place_keys[line] = key
        unlined: list[tuple[int, int]] = []
        if states[0]:  # records without a line scattered onto line 0
            states[0] = STATE_NONE
            unlined = [(offsets[at], lengths[at]) for at, line in enumerate(lines) if not line]
            self.records -= len(unlined)  # counted again once read by id
            for at, line in enumerate(lines):
                if not line:
                    self._untotal(data, at)
        for line in [line for line in self.failed_at if states[line] not in PLACED_STATES]:
            del self.failed_at[line]
        self.failed_at.pop(0, None)
        return unlined

    def _untotal(self, data: memoryview, at: int) -> None:
        """Take back the totals of record number ``at`` (it is added again by id)."""
        self.prompt_tokens -= field_of(data, at, "prompt_tokens")
        self.completion_tokens -= field_of(data, at, "completion_tokens")
        self.reasoning_tokens -= field_of(data, at, "reasoning_tokens")
        self.credits -= field_of(data, at, "credits")

    def _add_packed_slowly(self, data: memoryview) -> list[tuple[int, int]]:
        unlined: list[tuple[int, int]] = []
        for fields in RECORD.iter_unpack(data):
            entry = Entry(*fields)
            if entry.line:
                self.add(entry)
            else:
                unlined.append((entry.offset, entry.length))
        return unlined

    # --- questions -----------------------------------------------------------------------
    def state(self, line: int) -> int:
        return self.states[line] if 0 < line < len(self.states) else STATE_NONE

    def done_lines(self, *, retry_failed: bool) -> bytes:
        """One byte a manifest line, 1 where the row is done (not to be sent): the manifest
        reader skips those lines unparsed."""
        table = bytearray(256)
        for state in OK_STATES:
            table[state] = 1
        if not retry_failed:
            table[STATE_FAILED] = 1
        if self.redo_incomplete:
            table[STATE_OK_INCOMPLETE] = 0
        return bytes(self.states.translate(table))

    def is_done_row(self, row: Any, *, retry_failed: bool) -> bool:
        """Done by its line, or by its id for a record written without a line."""
        state = self.state(row.line)
        if state == STATE_NONE and self.unlined:
            state = self._resolve(row.id, row.line)
        if state == STATE_OK_INCOMPLETE and self.redo_incomplete:
            return False
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
        if state in PLACED_STATES:
            self.failed_at[line] = (offset, length)
        if self.keep_places:
            self._place(line, offset, length, 0)
        return state

    def count(self, state: int) -> int:
        lined = self.states.count(bytes((state,))) if state else 0
        return lined + sum(1 for s, _, _ in self.unlined.values() if s == state)

    def count_done(self, *, retry_failed: bool) -> int:
        done = sum(self.count(state) for state in OK_STATES)
        if self.redo_incomplete:
            done -= self.count(STATE_OK_INCOMPLETE)
        return done if retry_failed else done + self.count(STATE_FAILED)

    def errors_by_code(self) -> dict[str, int]:
        """The error code of every row whose latest record is an error, read from the journal."""
        return self._tally(ERROR_STATES, lambda record: record.get("error_code") or "error")

    def finish_reasons(self) -> dict[str, int]:
        """Rows answered ok by the reason their answer ended: ``stop`` (or none given) counted
        from the states, the others read from the journal."""
        counts = self._tally((STATE_OK_INCOMPLETE,),
                             lambda record: str(record.get("finish_reason") or "unknown"))
        complete = sum(self.count(state) for state in OK_STATES if state != STATE_OK_INCOMPLETE)
        if complete:
            counts["stop"] = counts.get("stop", 0) + complete
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def _tally(self, states: tuple[int, ...], name: Callable[[dict[str, Any]], str]
               ) -> dict[str, int]:
        """Rows whose latest record is in ``states``, counted by ``name`` of that record."""
        counts: dict[str, int] = {}
        places = [place for line, place in self.failed_at.items()
                  if self.state(line) in states]
        places += [(offset, length) for state, offset, length in self.unlined.values()
                   if state in states]
        places.sort()
        for _, _, record in _records_at(self.journal_path, places):
            key = name(record if isinstance(record, dict) else {})
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _done(state: int, retry_failed: bool) -> bool:
    if state in OK_STATES:
        return True
    return state == STATE_FAILED and not retry_failed


def load(
    journal_path: Path,
    index_path: Path,
    *,
    key_of: KeyOf,
    keep_places: bool = False,
    repair: IO[bytes] | None = None,
) -> JournalIndex:
    """Read journal.idx, check it against the journal, index the journal lines it lacks.

    ``repair``: journal.idx opened for appending; what does not match the journal is cut off
    and the records of the journal lines it lacks are appended, as they are read.
    """
    index = JournalIndex(journal_path, keep_places=keep_places)
    try:
        journal_size = journal_path.stat().st_size
    except FileNotFoundError:
        return index
    try:
        handle = open(index_path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        handle = None
    whole = covered = 0
    if handle is not None:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            whole = size - size % RECORD.size
            if whole:
                handle.seek(whole - RECORD.size)
                last = Entry(*RECORD.unpack(handle.read(RECORD.size)))
                if _matches(journal_path, journal_size, last):
                    covered = last.offset + last.length
                else:
                    whole = 0  # not this journal's index: rebuild it from the journal
            handle.seek(0)
            unlined: list[tuple[int, int]] = []
            left = whole
            while left:  # in chunks, so memory stays a few MB whatever the run's size
                chunk = handle.read(min(left, _LOAD_RECORDS * RECORD.size))
                if len(chunk) % RECORD.size or not chunk:
                    raise OSError(f"{index_path} changed while being read")
                unlined += index.add_packed(memoryview(chunk))
                left -= len(chunk)
        if unlined:
            _add_unlined(index, unlined)
    if repair is not None:
        repair.truncate(whole)
        repair.seek(0, os.SEEK_END)
    for entry in _parse_tail(index, covered, key_of):
        if repair is not None:
            repair.write(pack(entry))
    return index


def _matches(journal_path: Path, journal_size: int, last: Entry) -> bool:
    offset, length, state, line = last.offset, last.length, last.state, last.line
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
    for offset, length, record in _records_at(index.journal_path, places):
        if isinstance(record, dict) and "id" in record:
            index.add(entry_for(record, offset, length, 0), str(record["id"]))


def _records_at(journal_path: Path,
                places: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, Any]]:
    """(offset, length, decoded line) at each place, in the order given; None where the bytes
    there are not JSON (a damaged line)."""
    with open(journal_path, "rb") as journal:
        for offset, length in places:
            journal.seek(offset)
            try:
                record = orjson.loads(journal.read(length))
            except orjson.JSONDecodeError:
                record = None
            yield offset, length, record


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

