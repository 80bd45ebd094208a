"""Appending to the journal: one JSON line per finished row, then its index record.

A row counts as done only once its journal line is written and flushed to the kernel (it then
survives the process being killed); both files are fsync'ed at least every second and on close
(so they survive a power cut too, but for the last second). ``JournalWriter`` is the writing
half of ``rundir.RunDir``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import IO, Any

from batchrun.core.errors import StorageError
from batchrun.core.result import RowResult
from batchrun.store.files import fsync_dir
from batchrun.store.index import load
from batchrun.store.keys import cache_key
from batchrun.store.records import entry_for_result, pack

FSYNC_INTERVAL_S = 1.0


class JournalWriteError(StorageError):
    """A journal write failed part way: the first ``kept`` pending lines are whole in it."""

    def __init__(self, message: str, *, kept: int) -> None:
        super().__init__(message)
        self.kept = kept


class JournalWriter:
    """Writes ``journal_path`` and ``index_path`` of a run directory (a base of ``RunDir``,
    which sets the attributes below in its ``__init__``)."""

    path: Path
    journal_path: Path
    index_path: Path
    _journal: IO[bytes] | None
    _index: IO[bytes] | None
    _journal_size: int
    _pending: list[tuple[RowResult, str | None]]  # and the endpoint it is keyed by
    _last_fsync: float
    _appended: int
    _synced: int
    write_failure: StorageError | None
    job_version: int | None

    def _key_of(self, record: dict[str, Any]) -> str | None:
        raise NotImplementedError  # RunDir's: the record's cache key

    def open_journal(self) -> None:
        """Open both files for appending, after ending a torn last line and bringing the
        index up to date with the journal (lines written just before a kill)."""
        new = not self.journal_path.exists()
        # Unbuffered: ``flush`` writes the pending lines itself and knows how many made it.
        self._journal = open(self.journal_path, "ab", buffering=0)  # noqa: SIM115 - held
        self._repair_torn_tail()
        self._journal_size = self._journal.tell()
        self._index = open(self.index_path, "ab")  # noqa: SIM115 - held for the run
        load(self.journal_path, self.index_path, key_of=self._key_of, repair=self._index)
        self.sync()
        if new:
            fsync_dir(self.path)

    def _repair_torn_tail(self) -> None:
        """A process killed mid-write may leave half a line: end it so the next line is whole."""
        assert self._journal is not None
        size = self.journal_path.stat().st_size
        if size == 0:
            return
        with open(self.journal_path, "rb") as reader:
            reader.seek(size - 1)
            if reader.read(1) != b"\n":
                self._journal.write(b"\n")

    def append(self, result: RowResult, *, flush: bool = True,
               keyed_by: str | None = None) -> None:
        """Write one finished row; with ``flush`` it is in the kernel when this returns.

        ``flush=False`` leaves the row pending until ``flush()``: a run appends every row
        that finished in one turn of its event loop, then makes one write syscall for all
        (their lines, index records and cache keys made there, in one loop: measured cheaper
        than one row at a time, ``bench/RESULTS.md``). ``keyed_by``: the endpoint the row's
        cache key is made with, when it has none yet (None: no key). A failed write raises
        ``StorageError``, and so does every later call: a half-written line is left for the
        next run to skip (see ``_repair_torn_tail``).
        """
        assert self._journal is not None and self._index is not None, "open_journal() first"
        if self.write_failure is not None:
            raise self.write_failure
        self._pending.append((result, keyed_by))
        if flush:
            self.flush()

    def flush(self) -> None:
        """Hand the pending rows' lines to the kernel (one write), then queue their index
        records.

        On failure ``JournalWriteError`` says how many of the pending lines made it whole:
        those are in the journal (done), the rest are not (pending for the resume).
        """
        if self.write_failure is not None:
            self._pending = []
            raise JournalWriteError(self.write_failure.message, kept=0)
        if not self._pending:
            return
        assert self._journal is not None, "open_journal() first"
        results, self._pending = self._pending, []
        try:
            lines, records = self._lines_of(results)
        except (TypeError, ValueError) as exc:
            # Not expected (``to_json`` makes any row encodable), but a line that cannot be
            # made stops the run as a failed write does: nothing written, every row of the
            # batch pending for the resume, none dropped in silence.
            if self.write_failure is None:
                self.write_failure = StorageError(
                    f"cannot write {self.journal_path}: a row's line could not be made ({exc})")
            raise JournalWriteError(self.write_failure.message, kept=0) from None
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        written = 0
        try:
            with memoryview(data) as view:
                while written < len(data):
                    # A full disk first takes part of the data, then refuses with ENOSPC.
                    taken = self._journal.write(view[written:])
                    if not taken:
                        raise OSError(errno.EIO, "the journal took no bytes")
                    written += taken
        except OSError as exc:
            self._journal_size += written
            kept = _whole_lines(lines, written)
            with contextlib.suppress(OSError):
                self._queue_records(records[:kept])
            raise self._failed(exc, kept) from None
        self._journal_size += written
        try:
            self._queue_records(records)
        except OSError as exc:
            raise self._failed(exc, len(lines)) from None

    def _lines_of(self, results: list[tuple[RowResult, str | None]]
                  ) -> tuple[list[bytes], list[bytes]]:
        """The journal lines of ``results`` (their cache keys made with them) and their index
        records, as they will follow the journal's end."""
        lines: list[bytes] = []
        records: list[bytes] = []
        offset = self._journal_size
        job_version = self.job_version
        for result, keyed_by in results:
            if result.job_version is None:
                result.job_version = job_version  # which job answered it (run.json's versions)
            if (keyed_by is not None and result.cache_key is None
                    and result.request_sha256 is not None):
                result.cache_key = cache_key(keyed_by, result.request_sha256)
            line = result.to_json() + b"\n"
            lines.append(line)
            records.append(pack(entry_for_result(result, offset, len(line))))
            offset += len(line)
        return lines, records

    def _queue_records(self, records: list[bytes]) -> None:
        """Queue the index records of lines now in the kernel (one record a line). The index
        is a cache of the journal (lines it lacks are re-read on load, a torn record is cut
        off), so it reaches the kernel with the timer's fsync, not per row."""
        if not records:
            return
        assert self._index is not None
        self._index.write(records[0] if len(records) == 1 else b"".join(records))
        self._appended += len(records)
        if time.monotonic() - self._last_fsync >= FSYNC_INTERVAL_S:
            self.sync()

    def _failed(self, exc: OSError, kept: int) -> JournalWriteError:
        """Remember the first failure: nothing more is written after it."""
        if self.write_failure is None:
            self.write_failure = StorageError(
                f"cannot write {self.journal_path}: {exc.strerror or exc}")
        return JournalWriteError(self.write_failure.message, kept=kept)

    def sync(self) -> None:
        """fsync the journal, then its index (an index ahead of its journal is rebuilt)."""
        covered = self._appended
        for handle in (self._journal, self._index):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
        self._last_fsync = time.monotonic()
        self._synced = max(self._synced, covered)

    def sync_if_unsynced(self) -> None:
        """For a timer (any thread): fsync when lines were appended since the last fsync.

        ``StorageError`` when the disk refuses (the index's buffered records meet a full disk,
        an fsync fails): from then on nothing more is written, as after a failed write, and
        the lines already written stay done.
        """
        if self._appended > self._synced:
            try:
                self.sync()
            except OSError as exc:
                raise self._failed(exc, kept=0) from None

    def close_journal(self) -> None:
        """Write what is pending, fsync both files and close them."""
        failure: StorageError | None = None
        if self.write_failure is None and self._journal is not None:
            try:
                self.flush()
            except StorageError as error:
                failure = error  # raised once both files are closed
        journal, index = self._journal, self._index
        self._journal = self._index = None
        self._pending = []
        try:
            if self.write_failure is None:
                for handle in (journal, index):  # the journal first: an index never leads
                    if handle is not None:
                        handle.flush()
                        os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write {self.journal_path}: {exc.strerror or exc}") \
                from None
        finally:
            # After a failed write the index's buffer may hold records: closing writes them
            # if it can (they describe lines that are in the journal).
            for handle in (journal, index):
                if handle is not None:
                    with contextlib.suppress(OSError):
                        handle.close()
        if failure is not None:
            raise failure


def _whole_lines(lines: list[bytes], written: int) -> int:
    """How many of ``lines``, written in order, fit whole in the first ``written`` bytes."""
    whole = 0
    for line in lines:
        written -= len(line)
        if written < 0:
            break
        whole += 1
    return whole
