"""The run directory: lock, run description, append-only journal, results.parquet.

Layout of RUN_DIR:
  run.json         what was run: manifest path and fingerprint, job, endpoint (never a key)
  journal.jsonl    one JSON line per finished row attempt; the latest line of an id wins
  lock             flock'ed by the running process (the kernel frees it if the process dies)
  results.parquet  compacted from the journal at the end of a run, and on request
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun import __version__
from batchrun.errors import InputError
from batchrun.result import RESULTS_SCHEMA, STATUS_OK, RowResult

RUN_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "lock"
RESULTS_FILE = "results.parquet"
_TIMESTAMP_FIELDS = ("started_at", "finished_at")
_COLUMNS = RESULTS_SCHEMA.names
_FSYNC_INTERVAL_S = 1.0


@dataclass(slots=True)
class RowState:
    """What the journal says of one id (its latest line)."""

    ok: bool
    retryable: bool
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    credits: float


@dataclass
class JournalIndex:
    """The latest state of every id in the journal, and what was paid in all attempts."""

    rows: dict[str, RowState] = field(default_factory=dict)
    lines: int = 0
    torn_lines: int = 0

    def is_done(self, row_id: str, *, retry_failed: bool) -> bool:
        state = self.rows.get(row_id)
        if state is None:
            return False
        if state.ok:
            return True
        return not (state.retryable or retry_failed)


class RunLockedError(InputError):
    """Another live process holds this run directory."""


class RunDir:
    """One run directory, opened for running (locked) or for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_file = path / RUN_FILE
        self.journal_path = path / JOURNAL_FILE
        self.results_path = path / RESULTS_FILE
        self._lock_handle: IO[str] | None = None
        self._journal: IO[bytes] | None = None
        self._last_fsync = 0.0

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
        """Create or reopen the run for ``info``; True when an earlier run is resumed.

        Checks that the directory is writable before anything is sent, takes the lock, and
        refuses a run directory that belongs to a different manifest.
        """
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
        if self.exists():
            try:
                self.check_same_manifest(info["manifest_fingerprint"])
            except InputError:
                self.release()
                raise
            return True
        _atomic_write(self.run_file, orjson.dumps(info, option=orjson.OPT_INDENT_2))
        return False

    def check_same_manifest(self, fingerprint: str) -> None:
        """Refuse to resume a run of another manifest in this directory."""
        if not self.exists():
            return
        earlier = self.read_info()
        if earlier.get("manifest_fingerprint") != fingerprint:
            raise InputError(
                f"{self.path} holds a run of a different manifest ({earlier.get('manifest')}); "
                "choose a new --out directory to start a new run, or pass the original "
                "manifest to resume this one"
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

    def release(self) -> None:
        self.close_journal()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # --- journal -----------------------------------------------------------------------
    def open_journal(self) -> None:
        self._journal = open(self.journal_path, "ab")  # noqa: SIM115 - held for the run
        self._repair_torn_tail()

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
                self._journal.flush()

    def append(self, result: RowResult) -> None:
        """Write one finished row; it is on disk (flushed) before it counts as done."""
        assert self._journal is not None, "open_journal() first"
        # orjson encodes the dataclass itself: the same object as to_record(), at a tenth
        # of asdict()'s cost.
        self._journal.write(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE))
        self._journal.flush()
        now = time.monotonic()
        if now - self._last_fsync >= _FSYNC_INTERVAL_S:
            self.sync()

    def sync(self) -> None:
        if self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._last_fsync = time.monotonic()

    def close_journal(self) -> None:
        if self._journal is not None:
            self.sync()
            self._journal.close()
            self._journal = None

    def iter_journal(self) -> Iterator[dict[str, Any]]:
        """Every whole line of the journal, oldest first; torn lines are skipped."""
        try:
            handle = open(self.journal_path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    yield record

    def load_index(self) -> JournalIndex:
        index = JournalIndex()
        for record in self.iter_journal():
            index.lines += 1
            index.rows[record["id"]] = row_state(record)
        return index

    def latest_records(self) -> Iterator[dict[str, Any]]:
        """The latest journal line of every id, in journal order.

        Memory is 8 bytes a line, not a dict of every id (which costs ~150 bytes a row, 150 MB
        for a million rows): a first pass keeps a 64-bit hash of each line's id, lines whose
        hash comes again later are skipped in the second pass. Lines so skipped are checked
        against their later line's id, so a hash collision can never drop a row.
        """
        keys = array("Q")
        for record in self.iter_journal():
            keys.append(_id_key(record["id"]))
        lines = len(keys)
        replaced = superseded_lines(keys)
        del keys
        if replaced and not self._same_ids(replaced, lines):
            yield from self._latest_records_exact()
            return
        for line_no, record in enumerate(self.iter_journal()):
            if line_no >= lines:
                break  # appended after the first pass (a live run): not ours to judge
            if line_no not in replaced:
                yield record

    def latest_states(self) -> Iterator[RowState]:
        """``RowState`` of the latest line of every id (see ``latest_records``)."""
        return map(row_state, self.latest_records())

    def _same_ids(self, replaced: dict[int, int], lines: int) -> bool:
        """Whether every replaced line has the same id as the line said to replace it."""
        wanted = set(replaced) | set(replaced.values())
        ids: dict[int, Any] = {}
        for line_no, record in enumerate(self.iter_journal()):
            if line_no >= lines:
                break
            if line_no in wanted:
                ids[line_no] = record["id"]
        return all(ids.get(old) == ids.get(new) for old, new in replaced.items())

    def _latest_records_exact(self) -> Iterator[dict[str, Any]]:
        """The same as ``latest_records`` with a dict of every id (after a hash collision)."""
        latest_line: dict[Any, int] = {}
        for line_no, record in enumerate(self.iter_journal()):
            latest_line[record["id"]] = line_no
        for line_no, record in enumerate(self.iter_journal()):
            if latest_line.get(record["id"]) == line_no:
                yield record

    # --- results -----------------------------------------------------------------------
    def compact(self, metadata: dict[str, Any], *, batch_rows: int = 5000) -> int:
        """Write results.parquet: the latest journal line of every id; returns rows written."""
        schema = RESULTS_SCHEMA.with_metadata(
            {b"batchrun": orjson.dumps(metadata, option=orjson.OPT_NON_STR_KEYS)}
        )
        tmp_path = self.results_path.with_suffix(".parquet.tmp")
        written = 0
        with pq.ParquetWriter(tmp_path, schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for record in self.latest_records():
                batch.append(_to_parquet_record(record))
                if len(batch) >= batch_rows:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    written += len(batch)
                    batch = []
            if batch or written == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
        os.replace(tmp_path, self.results_path)
        return written


def row_state(record: dict[str, Any]) -> RowState:
    """What a journal line says of its id."""
    return RowState(
        ok=record.get("status") == STATUS_OK,
        retryable=bool(record.get("retryable")),
        error_code=record.get("error_code"),
        prompt_tokens=record.get("prompt_tokens") or 0,
        completion_tokens=record.get("completion_tokens") or 0,
        reasoning_tokens=record.get("reasoning_tokens") or 0,
        credits=record.get("credits") or record.get("credits_computed") or 0.0,
    )


def _id_key(row_id: Any) -> int:
    digest = hashlib.blake2b(str(row_id).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def superseded_lines(keys: array[int]) -> dict[int, int]:
    """``{line: later line}`` for every line whose key comes again later (pure).

    A stable sort puts equal keys next to each other in line order; each one but the last is
    replaced by its successor. Arrow does the sort, so a million keys cost ~30 MB for a moment.
    """
    if len(keys) < 2:
        return {}
    values = pa.Array.from_buffers(pa.uint64(), len(keys), [None, pa.py_buffer(keys)])
    order = pc.sort_indices(values)
    ordered = values.take(order)
    repeats = pc.indices_nonzero(pc.equal(ordered[1:], ordered[:-1]))
    if len(repeats) == 0:
        return {}
    older = order.take(repeats).to_pylist()
    newer = order.take(pc.add(repeats, 1)).to_pylist()
    return dict(zip(older, newer, strict=True))


def _to_parquet_record(record: dict[str, Any]) -> dict[str, Any]:
    row = {name: record.get(name) for name in _COLUMNS}
    for name in _TIMESTAMP_FIELDS:
        value = row[name]
        row[name] = int(value * 1_000_000) if value is not None else None
    return row


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run_info(
    *,
    manifest: Path,
    fingerprint: str,
    job: dict[str, Any],
    endpoint: str,
    rows_total: int,
) -> dict[str, Any]:
    return {
        "batchrun_version": __version__,
        "manifest": str(manifest.resolve()),
        "manifest_fingerprint": fingerprint,
        "rows_total": rows_total,
        "job": job,
        "endpoint": endpoint,
        "created_at": time.time(),
    }
