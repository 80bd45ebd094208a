"""The run directory: lock, run description, append-only journal and its index.

Layout of RUN_DIR:
  run.json         what was run: manifest path and fingerprint, job, endpoint, resume command
                   (never a key), the job versions rows were answered under (``job_versions``)
  journal.jsonl    one JSON line per finished row attempt; the latest line of a row wins
  journal.idx      56 bytes per journal line: where it is, its row's line, state, tokens, credits
  lock             flock'ed by the running process (the kernel frees it if the process dies)
  results.parquet  compacted from the journal at the end of a run, and by ``export``

Writing the journal is ``journal.JournalWriter``'s part; the index's record layout is
``records``'; compaction is ``compact``'s.
"""

from __future__ import annotations

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
from batchrun.store.compact import compact, iter_latest
from batchrun.store.files import atomic_write
from batchrun.store.index import JournalIndex, load
from batchrun.store.job_versions import (
    JOB_VERSION,
    JOB_VERSIONS,
    JobChange,
    first_versions,
    job_change,
    latest_version,
    refusal,
    with_version,
)
from batchrun.store.journal import JournalWriter
from batchrun.store.keys import key_prefix, record_key
from batchrun.store.records import OK_STATES

RUN_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
INDEX_FILE = "journal.idx"
LOCK_FILE = "lock"
RESULTS_FILE = "results.parquet"


class RunLockedError(InputError):
    """Another live process holds this run directory."""


class RunDir(JournalWriter):
    """One run directory, opened for running (locked) or for reading; its journal is written
    by the methods of ``JournalWriter``."""

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
        # Appended rows whose lines are not yet in the kernel (their index records follow
        # their lines there, never ahead of them): see ``flush``.
        self._pending: list[tuple[RowResult, str | None]] = []
        self._last_fsync = 0.0
        # Lines appended, and how many of them an fsync has covered (the timer thread reads).
        self._appended = 0
        # Set by the first failed journal write (disk full …): nothing more is written, so the
        # journal never holds a row that was reported as lost.
        self.write_failure: StorageError | None = None
        self._synced = 0
        self._endpoint: str | None = None
        # The job version this session's lines are written under (set by ``begin``).
        self.job_version: int | None = None

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
        record this session's resume command and job version (a new one if the job changed:
        ``check_same_job`` refused it first unless allowed); True when a run is resumed."""
        if self.exists():
            self.check_same_manifest(info["manifest_fingerprint"])
            earlier = self.read_info()
            updated = dict(earlier)
            if info.get("resume_command"):
                updated["resume_command"] = info["resume_command"]
            if info.get(JOB_VERSIONS):
                updated, self.job_version = with_version(
                    updated, latest_version(info)[1], info.get("job"), info.get("endpoint", ""))
            else:
                self.job_version = earlier.get(JOB_VERSION)
            if updated != earlier:
                atomic_write(self.run_file, _dump_info(updated))
            return True
        atomic_write(self.run_file, _dump_info(info))
        self.job_version = info.get(JOB_VERSION)
        return False

    def check_same_job(self, shape: dict[str, Any], *, answered: int, allow_change: bool,
                       reuse_offered: bool = True) -> JobChange | None:
        """Refuse to resume under a job whose requests differ from those the answered rows
        were sent with, unless ``allow_change``; the change, if any (see ``job_versions``).
        ``reuse_offered``: the command has ``--reuse``, which the refusal then suggests."""
        if not self.exists():
            return None
        change = job_change(self.read_info(), shape, answered=answered)
        if change is not None and change.answered and not allow_change:
            raise refusal(change, self.path, reuse_offered=reuse_offered)
        return change

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

    def read_record(self, offset: int, length: int) -> dict[str, Any]:
        with open(self.journal_path, "rb") as journal:
            journal.seek(offset)
            record: dict[str, Any] = orjson.loads(journal.read(length))
        return record

    def latest_records(self, fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """id → ``fields`` of its latest journal line. Reads the whole journal: for the
        calibration sample and the report, not for the hot path."""
        return {record["id"]: {name: record.get(name) for name in fields}
                for record in self.journal_records()}

    def journal_records(self) -> Iterator[dict[str, Any]]:
        """Every journal line with an id, oldest first (a row resent by a resume has one line
        per session): for the report's retries, not for the hot path."""
        try:
            journal = open(self.journal_path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise InputError(f"cannot read {self.journal_path}: {exc.strerror or exc}") from None
        with journal:
            for raw in journal:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a torn line of a killed process
                if isinstance(record, dict) and "id" in record:
                    yield record

    # --- results -----------------------------------------------------------------------
    def latest(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(manifest line, record) of the latest journal line of every row, by manifest line."""
        return iter_latest(self.journal_path, self.load_index(keep_places=True))

    def compact(self, metadata: dict[str, Any]) -> int:
        """Write results.parquet (the latest line of every row); returns rows written."""
        if self.exists() and JOB_VERSIONS not in metadata:
            metadata = {**metadata, JOB_VERSIONS: self.read_info().get(JOB_VERSIONS)}
        try:
            return compact(self.latest(), self.results_path, metadata)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"cannot write {self.results_path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None


def _dump_info(info: dict[str, Any]) -> bytes:
    return orjson.dumps(info, option=orjson.OPT_INDENT_2)


def run_info(
    *,
    manifest: Path,
    fingerprint: str,
    job: dict[str, Any],
    endpoint: str,
    rows_total: int,
    resume_command: str | None = None,
    request_shape: dict[str, Any] | None = None,
) -> dict[str, Any]:
    info = {
        "batchrun_version": __version__,
        "manifest": str(manifest.resolve()),
        "manifest_fingerprint": fingerprint,
        "rows_total": rows_total,
        "job": job,
        "endpoint": endpoint,
        "resume_command": resume_command,
        "created_at": time.time(),
    }
    if request_shape is not None:
        info.update(first_versions(request_shape))
    return info
