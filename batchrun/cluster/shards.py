"""Shards of a cluster run: ranges of manifest lines the driver hands out and the workers read
themselves (so media and long prompts never pass through the driver).

``ShardReader`` is a worker's reader: the manifest reader of a local run, started at the
shard's first line. ``ShardBook`` is the driver's
bookkeeping: the next range, the ranges each worker holds, the lines finished this session,
and the ranges of a lost worker handed out again without the lines it finished.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from batchrun.cluster.messages import Shard
from batchrun.manifest.job import JobSpec
from batchrun.manifest.jsonl import Position, skip_lines
from batchrun.manifest.reader import iter_rows, manifest_format
from batchrun.manifest.rows import Row


class ShardReader:
    """A worker's reader of its shards: the local engine's manifest reader, started where the
    shard starts. Shards come to a worker in increasing order, so a JSONL file is scanned
    forward once per worker (a cursor: the byte offset after line N), never from the top for
    every shard; Parquet starts at the row group that holds the shard."""

    def __init__(self, manifest: Path, job: JobSpec) -> None:
        self.manifest = manifest
        self.job = job
        self.jsonl = manifest_format(manifest) == "jsonl"
        self.cursor = Position(0, 0)

    def read(self, shard: Shard) -> tuple[list[Row], bool]:
        """The rows of ``shard`` not in its ``skip``, and whether the manifest ends within it."""
        rows: list[Row] = []
        for row in iter_rows(self.manifest, self.job, check_duplicates=False,
                             start=self._before(shard.first)):
            if row.line > shard.last:
                return rows, False
            if row.line >= shard.first and row.line not in shard.skip:  # Parquet: from its group
                rows.append(row)
        return rows, True

    def _before(self, first: int) -> Position:
        if not self.jsonl:
            return Position(first - 1)
        if self.cursor.line > first - 1:
            self.cursor = Position(0, 0)  # a range handed out again: earlier in the file
        with open(self.manifest, "rb") as f:
            f.seek(self.cursor.offset)
            skipped = skip_lines(f, first - 1 - self.cursor.line)
            self.cursor = Position(self.cursor.line + skipped, f.tell())
        return self.cursor


class ShardBook:
    """Which lines go to which worker, on the driver."""

    def __init__(self, done_lines: bytes, size: int) -> None:
        self.done = done_lines  # 1 for a line done in an earlier session
        self.size = max(1, size)
        self.finished = bytearray(len(done_lines))  # 1 for a line finished this session
        self.next_first = 1
        self.end: int | None = None  # the manifest's last line, once a worker read past it
        self.held: dict[str, dict[int, Shard]] = {}
        self.again: deque[Shard] = deque()  # ranges of lost workers, first out
        self._numbers = 0

    def take(self, worker: str) -> Shard | None:
        """The next range for ``worker``, None while there is none to give."""
        if self.again:
            shard = self.again.popleft()
        else:
            first = self._first_not_done(self.next_first)
            if self.end is not None and first > self.end:
                return None
            last = first + self.size - 1
            self.next_first = last + 1
            shard = Shard(self._number(), first, last, self._skips(first, last))
        self.held.setdefault(worker, {})[shard.number] = shard
        return shard

    def finish(self, line: int) -> None:
        if line >= len(self.finished):
            self.finished.extend(bytes(line + 1 - len(self.finished)))
        self.finished[line] = 1

    def shard_done(self, worker: str, number: int, reached_end: bool) -> None:
        shard = self.held.get(worker, {}).pop(number, None)
        if shard is not None and reached_end:
            self.end = shard.last if self.end is None else min(self.end, shard.last)

    def lose(self, worker: str) -> int:
        """A worker was lost: its ranges go out again without the lines it finished; how
        many ranges."""
        lost = self.held.pop(worker, {})
        for shard in sorted(lost.values(), key=lambda s: s.first):
            self.again.append(Shard(self._number(), shard.first, shard.last,
                                    self._skips(shard.first, shard.last)))
        return len(lost)

    def holding(self, worker: str) -> int:
        return len(self.held.get(worker, {}))

    @property
    def all_handed_out(self) -> bool:
        """Nothing left to give now or later: the end is known and reached, none to redo."""
        return (not self.again and self.end is not None
                and self._first_not_done(self.next_first) > self.end)

    @property
    def all_done(self) -> bool:
        return self.all_handed_out and not any(self.held.values())

    def _first_not_done(self, line: int) -> int:
        found = self.done.find(0, line)
        return found if found >= 0 else max(line, len(self.done))

    def _skips(self, first: int, last: int) -> frozenset[int]:
        return frozenset(
            line for line in range(first, last + 1)
            if (line < len(self.done) and self.done[line])
            or (line < len(self.finished) and self.finished[line]))

    def _number(self) -> int:
        self._numbers += 1
        return self._numbers
