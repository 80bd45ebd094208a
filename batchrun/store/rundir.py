"""The run directory: lock, run description, append-only journal and its index.

Layout of RUN_DIR:
  run.json         what was run: manifest path and fingerprint, job, endpoint, resume command
                   (never a key)
  journal.jsonl    one JSON line per finished row attempt; the latest line of a row wins
  journal.idx      56 bytes per journal line: where it is, its row's line, state, tokens, credits
  lock             flock'ed by the running process (the kernel frees it if the process dies)
  results.parquet  compacted from the journal at the end of a run, and by ``export``

A row counts as done only once its journal line is written and flushed to the kernel (it then
survives the process being killed); both files are fsync'ed at least every second and on close
(so they survive a power cut too, but for the last second).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from batchrun import __version__
from batchrun.core.errors import InputError, StorageError
from batchrun.core.result import RowResult
from batchrun.store.index import (
    OK_STATES,
    JournalIndex,
    entry_for_result,
    key_prefix,
    load,
    pack,
)

RUN_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
INDEX_FILE = "journal.idx"
LOCK_FILE = "lock"
RESULTS_FILE = "results.parquet"
FSYNC_INTERVAL_S = 1.0


class JournalWriteError(StorageError):
    """A journal write failed part way: the first ``kept`` pending lines are whole in it."""

    def __init__(self, message: str, *, kept: int) -> None:
        super().__init__(message)
        self.kept = kept


class RunLockedError(InputError):
    """Another live process holds this run directory."""


class RunDir:
    """One run directory, opened for running (locked) or for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_file = path / RUN_FILE
        self.journal_path = path / JOURNAL_FILE
        self.index_path = path / INDEX_FILE
        self.results_path = path / RESULTS_FILE
        self._lock_handle: IO[str] | None = None
        self._journal: IO[bytes] | None = None
        self._index: IO[bytes] | None = None
        self._journal_size = 0
        # Appended lines not yet handed to the kernel, and their index records (which follow
        # their lines there, never ahead of them): see ``flush``.
        self._pending_lines: list[bytes] = []
        self._pending_records: list[bytes] = []
        self._pending_bytes = 0
        self._last_fsync = 0.0
        # Lines appended, and how many of them an fsync has covered (the timer thread reads).
        self._appended = 0
        # Set by the first failed journal write (disk full …): nothing more is written, so the
        # journal never holds a row that was reported as lost.
        self.write_failure: StorageError | None = None
        self._synced = 0
        self._endpoint: str | None = None

    # --- opening -----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.run_file.exists()

    def read_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = orjson.loads(self.run_file.read_bytes())
        except FileNotFoundError:
            raise InputError(f"{self.path} holds no batchrun run (no {RUN_FILE})") from None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{self.run_file} is damaged: {exc}") from None
        return info

    def prepare(self, info: dict[str, Any]) -> bool:
        """Lock, then create or reopen the run for ``info``; True when a run is resumed."""
        self.lock()
        try:
            return self.begin(info)
        except InputError:
            self.release()
            raise

    def lock(self) -> None:
        """Create the directory, check it is writable and take the lock (before reading it)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        probe = self.path / ".write-probe"
        try:
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as exc:
            raise InputError(f"run directory {self.path} is not writable: {exc.strerror}") from None
        self._take_lock()

    def begin(self, info: dict[str, Any]) -> bool:
        """Write run.json for a new run, or check the manifest of the run being resumed and
        record this session's resume command; True when a run is resumed."""
        if self.exists():
            self.check_same_manifest(info["manifest_fingerprint"])
            earlier = self.read_info()
            if info.get("resume_command") and earlier.get("resume_command") != info.get(
                "resume_command"
            ):
                _atomic_write(self.run_file, _dump_info(
                    {**earlier, "resume_command": info["resume_command"]}))
            return True
        _atomic_write(self.run_file, _dump_info(info))
        return False

    def check_same_manifest(self, fingerprint: str) -> None:
        """Refuse to resume a run of another manifest in this directory."""
        if not self.exists():
            return
        earlier = self.read_info()
        if earlier.get("manifest_fingerprint") != fingerprint:
            raise InputError(
                f"{self.path} holds a run of a different manifest ({earlier.get('manifest')}, "
                "or that file has changed since). To start a new run, choose a new --out "
                "directory (add --reuse " + str(self.path) + " to keep the answers whose "
                "request did not change); to resume this run, pass its original manifest"
            )

    def _take_lock(self) -> None:
        handle = open(self.path / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held open
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"{self.path} is in use by pid {holder}; wait for it to finish or stop it"
            ) from None
        # A lock left by a killed process is simply free again: flock dies with its holder.
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def is_running(self) -> bool:
        """Whether a live process holds the lock right now (for ``status``)."""
        try:
            handle = open(self.path / LOCK_FILE, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False

    def release(self) -> None:
        self.close_journal()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # --- index -------------------------------------------------------------------------
    def _key_of(self, record: dict[str, Any]) -> str | None:
        from batchrun.store.cache import record_key

        if self._endpoint is None and not record.get("cache_key") and self.exists():
            self._endpoint = str(self.read_info().get("endpoint") or "")
        return record_key(record, self._endpoint)

    def load_index(self, *, keep_places: bool = False) -> JournalIndex:
        """What the journal says (index + the journal lines it lacks); reads, never writes."""
        return load(self.journal_path, self.index_path, key_of=self._key_of,
                    keep_places=keep_places)

    def cache_entries(self) -> Iterator[tuple[int, int, int]]:
        """(cache key prefix, offset, length) of the latest journal line of every ok row."""
        index = self.load_index(keep_places=True)
        states, offsets, lengths, keys = index.states, index.offsets, index.lengths, index.keys
        for line in range(1, len(offsets)):
            if states[line] in OK_STATES and keys[line]:
                yield keys[line], offsets[line], lengths[line]
        with open(self.journal_path, "rb") as journal:
            for state, offset, length in index.unlined.values():
                if state not in OK_STATES:
                    continue
                journal.seek(offset)
                record = orjson.loads(journal.read(length))
                prefix = key_prefix(self._key_of(record))
                if prefix:
                    yield prefix, offset, length

    # --- journal -----------------------------------------------------------------------
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
            _fsync_dir(self.path)

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

    def append(self, result: RowResult, *, flush: bool = True) -> None:
        """Write one finished row; with ``flush`` it is in the kernel when this returns.

        ``flush=False`` leaves the line pending until ``flush()``: a run appends every row
        that finished in one turn of its event loop, then makes one write syscall for all.
        A failed write raises ``StorageError``, and so does every later call: a half-written
        line is left for the next run to skip (see ``_repair_torn_tail``).
        """
        assert self._journal is not None and self._index is not None, "open_journal() first"
        if self.write_failure is not None:
            raise self.write_failure
        line = result.to_json() + b"\n"
        offset = self._journal_size + self._pending_bytes
        self._pending_bytes += len(line)
        self._pending_lines.append(line)
        self._pending_records.append(pack(entry_for_result(result, offset, len(line))))
        if flush:
            self.flush()

    def flush(self) -> None:
        """Hand the pending lines to the kernel (one write), then queue their index records.

        On failure ``JournalWriteError`` says how many of the pending lines made it whole:
        those are in the journal (done), the rest are not (pending for the resume).
        """
        if self.write_failure is not None:
            self._pending_lines, self._pending_records, self._pending_bytes = [], [], 0
            raise JournalWriteError(self.write_failure.message, kept=0)
        if not self._pending_lines:
            return
        assert self._journal is not None, "open_journal() first"
        lines, records = self._pending_lines, self._pending_records
        self._pending_lines, self._pending_records, self._pending_bytes = [], [], 0
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
        """For a timer (any thread): fsync when lines were appended since the last fsync."""
        if self._appended > self._synced:
            self.sync()

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
        self._pending_lines, self._pending_records, self._pending_bytes = [], [], 0
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

    def read_record(self, offset: int, length: int) -> dict[str, Any]:
        with open(self.journal_path, "rb") as journal:
            journal.seek(offset)
            record: dict[str, Any] = orjson.loads(journal.read(length))
        return record

    def latest_records(self, fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """id → ``fields`` of its latest journal line. Reads the whole journal: for the
        calibration sample and the report, not for the hot path."""
        latest: dict[str, dict[str, Any]] = {}
        try:
            journal = open(self.journal_path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError):
            return latest
        except OSError as exc:
            raise InputError(f"cannot read {self.journal_path}: {exc.strerror or exc}") from None
        with journal:
            for raw in journal:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a torn line of a killed process
                if isinstance(record, dict) and "id" in record:
                    latest[record["id"]] = {name: record.get(name) for name in fields}
        return latest

    # --- results -----------------------------------------------------------------------
    def compact(self, metadata: dict[str, Any]) -> int:
        """Write results.parquet (the latest line of every row); returns rows written."""
        from batchrun.store.compact import compact

        try:
            return compact(self, metadata)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"cannot write {self.results_path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None


def _whole_lines(lines: list[bytes], written: int) -> int:
    """How many of ``lines``, written in order, fit whole in the first ``written`` bytes."""
    whole = 0
    for line in lines:
        written -= len(line)
        if written < 0:
            break
        whole += 1
    return whole


def _dump_info(info: dict[str, Any]) -> bytes:
    return orjson.dumps(info, option=orjson.OPT_INDENT_2)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a file's creation or rename durable, not only its bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def run_info(
    *,
    manifest: Path,
    fingerprint: str,
    job: dict[str, Any],
    endpoint: str,
    rows_total: int,
    resume_command: str | None = None,
) -> dict[str, Any]:
    return {
        "batchrun_version": __version__,
        "manifest": str(manifest.resolve()),
        "manifest_fingerprint": fingerprint,
        "rows_total": rows_total,
        "job": job,
        "endpoint": endpoint,
        "resume_command": resume_command,
        "created_at": time.time(),
    }
