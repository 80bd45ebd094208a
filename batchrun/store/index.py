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
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from batchrun.core.result import STATUS_OK, RowResult

RECORD = struct.Struct("<QIB3xQIII4xdQ")
_LOAD_RECORDS = 65536  # records read at a time (3.5 MB)

STATE_NONE = 0
STATE_OK = 1
STATE_FAILED = 2  # a final error: resent only with --retry-failed
STATE_RETRYABLE = 3  # retries ran out on a retryable error: a plain resume sends it again
STATE_REUSED = 4  # ok, answer copied from an earlier run (--reuse): nothing paid here
STATE_OK_NO_USAGE = 5  # ok, but the answer carried no usage: its cost is unknown

OK_STATES = (STATE_OK, STATE_REUSED, STATE_OK_NO_USAGE)
ERROR_STATES = (STATE_FAILED, STATE_RETRYABLE)
_U32_MAX = 2**32 - 1


Entry = tuple[int, int, int, int, int, int, int, float, int]
KeyOf = Callable[[dict[str, Any]], str | None]  # a journal record's cache key


def state_of(record: dict[str, Any]) -> int:
    return _state(record.get("status"), record.get("reused_from"), record.get("error_code"),
                  record.get("retryable"))


def _state(status: Any, reused_from: Any, error_code: Any, retryable: Any) -> int:
    if status == STATUS_OK:
        if reused_from:
            return STATE_REUSED
        return STATE_OK_NO_USAGE if error_code == "missing_usage" else STATE_OK
    return STATE_RETRYABLE if retryable else STATE_FAILED


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
    return _entry(offset, length, state_of(record), record.get("line"),
                  record.get("prompt_tokens"), record.get("completion_tokens"),
                  record.get("reasoning_tokens"), credits, key)


def entry_for_result(result: RowResult, offset: int, length: int) -> Entry:
    """``entry_for`` of a result about to be journaled, read from its attributes (the same
    entry as from its record: the append path runs for every row, without a dict)."""
    credits = result.credits if result.credits is not None else result.credits_computed
    state = _state(result.status, result.reused_from, result.error_code, result.retryable)
    return _entry(offset, length, state, result.line, result.prompt_tokens,
                  result.completion_tokens, result.reasoning_tokens, credits,
                  key_prefix(result.cache_key))


def _entry(offset: int, length: int, state: int, line: Any, prompt: Any, completion: Any,
           reasoning: Any, credits: Any, key: int) -> Entry:
    line = line if isinstance(line, int) and line > 0 else 0
    if state == STATE_REUSED:  # paid by the earlier run: nothing to total here
        return (offset, length, state, line, 0, 0, 0, 0.0, key)
    return (offset, length, state, line, _count(prompt), _count(completion), _count(reasoning),
            float(credits) if isinstance(credits, int | float) else 0.0, key)


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
        if state in ERROR_STATES:
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

        Column slices of the records are taken in C (strided memoryviews); only the scatter
        of states onto lines is a Python loop: about 0.1 s for a million records.
        """
        if sys.byteorder != "little":
            return self._add_packed_slowly(data)
        count = len(data) // RECORD.size
        if not count:
            return []
        words = data.cast("Q")
        halves = data.cast("I")
        lines = words[2::7]
        state_bytes = bytes(data[12::RECORD.size])
        size = max(lines) + 1
        states = self.states
        if len(states) < size:
            states.extend(bytes(size - len(states)))
        for line, state in zip(lines, state_bytes, strict=True):
            states[line] = state
        self.records += count
        self.prompt_tokens += sum(halves[6::14])
        self.completion_tokens += sum(halves[7::14])
        self.reasoning_tokens += sum(halves[8::14])
        self.credits += sum(data.cast("d")[5::7])
        offsets, lengths = words[0::7], halves[2::14]
        errors: list[int] = []
        for state in ERROR_STATES:
            at = state_bytes.find(state)
            while at >= 0:
                errors.append(at)
                at = state_bytes.find(state, at + 1)
        for at in sorted(errors):
            self.failed_at[lines[at]] = (offsets[at], lengths[at])
        if self.keep_places:
            self._grow_places()
            place_offsets, place_lengths, place_keys = self.offsets, self.lengths, self.keys
            for line, offset, length, key in zip(lines, offsets, lengths, words[6::7],
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
                    self._untotal(halves, data, at)
        for line in [line for line in self.failed_at if states[line] not in ERROR_STATES]:
            del self.failed_at[line]
        self.failed_at.pop(0, None)
        return unlined

    def _untotal(self, halves: memoryview, data: memoryview, at: int) -> None:
        """Take back the totals of one record (it is added again by id)."""
        self.prompt_tokens -= halves[at * 14 + 6]
        self.completion_tokens -= halves[at * 14 + 7]
        self.reasoning_tokens -= halves[at * 14 + 8]
        self.credits -= data.cast("d")[at * 7 + 5]

    def _add_packed_slowly(self, data: memoryview) -> list[tuple[int, int]]:
        unlined: list[tuple[int, int]] = []
        for entry in RECORD.iter_unpack(data):
            if entry[3]:
                self.add(entry)
            else:
                unlined.append((entry[0], entry[1]))
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
        return bytes(self.states.translate(table))

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
        done = sum(self.count(state) for state in OK_STATES)
        return done if retry_failed else done + self.count(STATE_FAILED)

    def errors_by_code(self) -> dict[str, int]:
        """The error code of every row whose latest record is an error, read from the journal."""
        counts: dict[str, int] = {}
        places = list(self.failed_at.values())
        places += [(offset, length) for state, offset, length in self.unlined.values()
                   if state in ERROR_STATES]
        places.sort()
        for _, _, record in _records_at(self.journal_path, places):
            code = (record if record is not None else {}).get("error_code") or "error"
            counts[code] = counts.get(code, 0) + 1
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
                last = RECORD.unpack(handle.read(RECORD.size))
                if _matches(journal_path, journal_size, last):
                    covered = last[0] + last[1]
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

