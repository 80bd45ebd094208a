"""Shards of a cluster run: ranges of manifest lines the driver hands out and the workers read
themselves (so media and long prompts never pass through the driver).

``read_shard`` is a worker's reader: the manifest reader of a local run, told that every line
outside the shard is done (those are passed over unparsed). ``ShardBook`` is the driver's
bookkeeping: the next range, the ranges each worker holds, the lines finished this session,
and the ranges of a lost worker handed out again without the lines it finished.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from batchrun.cluster.messages import Shard
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row


def read_shard(manifest: Path, job: JobSpec, shard: Shard) -> tuple[list[Row], bool]:
    """The rows of ``shard`` not in its ``skip``, and whether the manifest ends within it."""
    skipped = bytearray(shard.last + 1)
    skipped[1:shard.first] = b"\x01" * (shard.first - 1)
    for line in shard.skip:
        if shard.first <= line <= shard.last:
            skipped[line] = 1
    rows: list[Row] = []
    for row in iter_rows(manifest, job, check_duplicates=False, done_lines=bytes(skipped)):
        if row.line > shard.last:
            return rows, False
        rows.append(row)
    return rows, True


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
