"""The run directory on real files: journal and its index, torn lines, lock, compaction."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.core.errors import InputError, StorageError
from batchrun.core.result import RESULTS_SCHEMA, RowResult
from batchrun.manifest.rows import Row
from batchrun.store.journal import JournalWriteError
from batchrun.store.records import (
    FIELD_AT,
    RECORD,
    STATE_FAILED,
    STATE_OK,
    STATE_RETRYABLE,
    Entry,
    column,
    pack,
)
from batchrun.store.rundir import RunDir, RunLockedError, run_info


def _info(tmp_path: Path, fingerprint: str = "f1") -> dict[str, Any]:
    return run_info(manifest=tmp_path / "m.jsonl", fingerprint=fingerprint, job={"model": "x"},
                    endpoint="http://127.0.0.1:1/v1", rows_total=3)


def _ok(row_id: str, line: int, credits: float = 0.5) -> RowResult:
    return RowResult(id=row_id, status="ok", content=f"answer {row_id}", prompt_tokens=10,
                     completion_tokens=20, reasoning_tokens=5, total_tokens=35, credits=credits,
                     attempts=1, started_at=time.time(), finished_at=time.time(), line=line)


def _error(row_id: str, line: int, code: str, *, retryable: bool) -> RowResult:
    return RowResult(id=row_id, status="error", error_code=code, retryable=retryable, line=line,
                     attempts=1)


def _write(run: RunDir, *results: RowResult) -> None:
    run.open_journal()
    for result in results:
        run.append(result)
    run.close_journal()


def _opened(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path))
    return run


def test_latest_line_wins_totals_count_every_attempt_and_compaction_is_by_line(
    tmp_path: Path,
) -> None:
    run = _opened(tmp_path)
    assert run.exists()
    _write(run, _error("a", 2, "upstream_error", retryable=True), _ok("b", 1),
           _ok("a", 2, credits=0.25), _error("c", 3, "invalid_request", retryable=False))
    run.release()

    index = run.load_index()
    assert (index.state(1), index.state(2), index.state(3)) == (STATE_OK, STATE_OK, STATE_FAILED)
    assert index.records == 4 and index.count(STATE_OK) == 2
    assert index.credits == pytest.approx(0.75) and index.prompt_tokens == 20
    assert index.errors_by_code() == {"invalid_request": 1}

    written = run.compact({"totals": {"rows": 3}})
    table = pq.read_table(run.results_path)
    assert written == 3 == table.num_rows
    assert table.schema.remove_metadata() == RESULTS_SCHEMA
    assert table.column("id").to_pylist() == ["b", "a", "c"]  # manifest order
    assert table.column("credits").to_pylist()[1] == 0.25
    assert b"batchrun" in table.schema.metadata


def test_rows_appended_together_are_each_one_line_even_one_orjson_refuses(
    tmp_path: Path,
) -> None:
    # Lines and index records are made when the pending rows are flushed; a lone surrogate
    # (a file name Python could not decode, in an error message) must not lose its row or
    # the rows flushed with it.
    run = _opened(tmp_path)
    run.open_journal()
    bad = RowResult(id="s", status="error", error_code="media_error", line=2, attempts=0,
                    error_message="cannot read photo-\udcff.png")
    for result in (_ok("a", 1), bad, _ok("c", 3)):
        run.append(result, flush=False)
    assert run.journal_path.read_bytes() == b""  # nothing in the kernel before the flush
    run.flush()
    run.close_journal()
    lines = run.journal_path.read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["a", "s", "c"]
    assert orjson.loads(lines[1])["error_message"] == "cannot read photo-?.png"
    index = run.load_index()
    assert (index.state(1), index.state(2), index.state(3)) == (STATE_OK, STATE_FAILED, STATE_OK)


def test_a_token_count_past_64_bits_keeps_its_row_held_to_int64(tmp_path: Path) -> None:
    # A bad server's usage ({"prompt_tokens": 1e20}) must not lose the row or its batch.
    run = _opened(tmp_path)
    run.open_journal()
    huge = _ok("h", 2)
    huge.prompt_tokens = 10**20
    for result in (_ok("a", 1), huge):
        run.append(result, flush=False)
    run.flush()
    run.close_journal()
    lines = run.journal_path.read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["a", "h"]
    assert orjson.loads(lines[1])["prompt_tokens"] == 2**63 - 1
    assert run.load_index().state(2) == STATE_OK


def test_a_line_that_cannot_be_made_stops_the_journal_and_drops_no_row_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lines are made at flush for a batch of rows: a failure there is a failed write (the
    # run stops, its rows stay pending for the resume), not an exception lost in a callback.
    run = _opened(tmp_path)
    run.open_journal()
    monkeypatch.setattr(RowResult, "to_json", lambda self: (_ for _ in ()).throw(TypeError("x")))
    run.append(_ok("a", 1), flush=False)
    with pytest.raises(JournalWriteError) as failed:
        run.flush()
    assert failed.value.kept == 0 and "could not be made" in failed.value.message
    with pytest.raises(StorageError):
        run.append(_ok("b", 2))  # nothing more is written after it
    monkeypatch.undo()
    run.close_journal()  # the failure was told once; the files are closed
    assert run.journal_path.read_bytes() == b""


def test_retryable_errors_are_resent_final_errors_only_on_request(tmp_path: Path) -> None:
    run = _opened(tmp_path)
    _write(run, _error("r", 1, "upstream_error", retryable=True),
           _error("f", 2, "invalid_request", retryable=False), _ok("o", 3))
    index = run.load_index()
    assert index.state(1) == STATE_RETRYABLE
    assert index.done_lines(retry_failed=False) == bytes([0, 0, 1, 1])
    assert index.done_lines(retry_failed=True) == bytes([0, 0, 0, 1])
    assert index.count_done(retry_failed=False) == 2
    assert index.count_done(retry_failed=True) == 1


def test_torn_journal_line_is_skipped_and_ended(tmp_path: Path) -> None:
    run = _opened(tmp_path)
    _write(run, _ok("a", 1))
    with open(run.journal_path, "ab") as handle:
        handle.write(b'{"id": "b", "status": "o')  # killed mid-write
    index = run.load_index()
    assert index.state(1) == STATE_OK and index.state(2) == 0 and index.torn_lines == 1
    _write(run, _ok("c", 3))
    index = run.load_index()
    assert (index.state(1), index.state(2), index.state(3)) == (STATE_OK, 0, STATE_OK)
    assert index.records == 2
    journal_lines = run.journal_path.read_bytes().splitlines()
    assert len(journal_lines) == 3 and journal_lines[1] == b'{"id": "b", "status": "o'
    assert [orjson.loads(raw)["id"] for raw in (journal_lines[0], journal_lines[2])] == ["a", "c"]


def test_journal_lines_the_index_lacks_are_read_and_indexed_again(tmp_path: Path) -> None:
    """A kill between writing the journal line and its index record loses nothing."""
    run = _opened(tmp_path)
    _write(run, _ok("a", 1), _ok("b", 2), _ok("c", 3))
    data = run.index_path.read_bytes()
    run.index_path.write_bytes(data[: RECORD.size + 7])  # one whole record and a torn one
    index = run.load_index()
    assert index.count(STATE_OK) == 3 and index.records == 3
    _write(run, _ok("d", 4))
    assert run.index_path.stat().st_size == 4 * RECORD.size
    assert run.load_index().count(STATE_OK) == 4


def test_an_index_that_does_not_match_its_journal_is_rebuilt(tmp_path: Path) -> None:
    run = _opened(tmp_path)
    _write(run, _ok("a", 1), _ok("b", 2))
    stale_index = run.index_path.read_bytes()
    run.journal_path.write_bytes(b"")  # a journal replaced by hand: the index points past it
    _write(run, _error("x", 1, "invalid_request", retryable=False))
    assert run.load_index().state(1) == STATE_FAILED
    run.index_path.write_bytes(stale_index)  # claims two ok rows the journal does not hold
    index = run.load_index()
    assert index.state(1) == STATE_FAILED and index.state(2) == 0


def test_journal_lines_without_a_manifest_line_are_matched_by_id(tmp_path: Path) -> None:
    """Journals written before lines were recorded: no index, no ``line`` field."""
    run = _opened(tmp_path)
    lines = [orjson.dumps({"id": "a", "status": "ok", "credits": 1.0}),
             orjson.dumps({"id": "b", "status": "error", "error_code": "upstream_error",
                           "retryable": True})]
    run.journal_path.write_bytes(b"\n".join(lines) + b"\n")
    index = run.load_index()
    assert index.count(STATE_OK) == 1 and index.credits == 1.0
    assert index.is_done_row(Row(id="a", line=7), retry_failed=False)
    assert not index.is_done_row(Row(id="b", line=8), retry_failed=False)
    assert index.state(7) == STATE_OK and index.state(8) == STATE_RETRYABLE
    _write(run, _ok("b", 8))  # the index is written now, ids and all
    index = run.load_index()
    assert index.is_done_row(Row(id="a", line=7), retry_failed=False)
    assert index.is_done_row(Row(id="b", line=8), retry_failed=False)


def test_timer_sync_fsyncs_journal_and_index_only_when_lines_were_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _opened(tmp_path)
    run.open_journal()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[-1])
    run.sync_if_unsynced()
    assert synced == []
    run.append(_ok("a", 1))
    synced.clear()
    run.sync_if_unsynced()
    assert len(synced) == 2  # the journal, then its index
    run.sync_if_unsynced()
    assert len(synced) == 2
    run.release()


def test_a_different_manifest_is_refused_with_how_to_start_anew(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path, "f1"))
    run.release()
    with pytest.raises(InputError, match="different manifest") as refused:
        RunDir(tmp_path / "run").prepare(_info(tmp_path, "f2"))
    assert "new --out" in refused.value.message and "--reuse" in refused.value.message
    again = RunDir(tmp_path / "run")
    assert again.prepare(_info(tmp_path, "f1")) is True
    again.release()


def test_lock_refuses_a_live_holder_and_frees_with_a_killed_one(tmp_path: Path) -> None:
    path = tmp_path / "run"
    RunDir(path).prepare(_info(tmp_path))  # creates the dir; lock released with the object
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,sys,time; h=open(sys.argv[1],'a+'); fcntl.flock(h, fcntl.LOCK_EX);"
         "h.write('4242'); h.flush(); print('locked', flush=True); time.sleep(60)",
         str(path / "lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match="in use"):
            RunDir(path).prepare(_info(tmp_path))
        assert RunDir(path).is_running()
    finally:
        holder.kill()
        holder.wait()
    assert not RunDir(path).is_running()
    run = RunDir(path)
    assert run.prepare(_info(tmp_path)) is True  # the stale lock of a killed process is free
    run.release()


def test_unwritable_run_directory_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot create run directory"):
        RunDir(blocker / "run").prepare(_info(tmp_path))


_counts = st.one_of(st.none(), st.integers(-5, 2**33))
_results = st.builds(
    RowResult,
    id=st.text(min_size=1, max_size=8),
    status=st.sampled_from(["ok", "error"]),
    prompt_tokens=_counts, completion_tokens=_counts, reasoning_tokens=_counts,
    credits=st.one_of(st.none(), st.floats(0, 1e6)),
    credits_computed=st.one_of(st.none(), st.floats(0, 1e6)),
    error_code=st.sampled_from([None, "missing_usage", "bad_request"]),
    retryable=st.booleans(),
    line=st.one_of(st.none(), st.integers(-1, 2**31)),
    cache_key=st.one_of(st.none(), st.text("0123456789abcdefxyz", max_size=64)),
    reused_from=st.sampled_from([None, "", "/old/run"]),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_results, min_size=1, max_size=6))
def test_index_records_written_on_append_equal_those_rebuilt_from_the_journal(
    tmp_path: Path, results: list[RowResult]
) -> None:
    # append() builds each record from the result; a rebuild reads the journal's JSON.
    run = RunDir(tmp_path / f"run{len(list(tmp_path.iterdir()))}")
    run.prepare(_info(tmp_path))
    _write(run, *results)
    written = run.index_path.read_bytes()
    run.index_path.unlink()
    run.open_journal()  # rebuilds the index from the journal
    run.close_journal()
    assert run.index_path.read_bytes() == written


_PARTIAL_WRITE = """
import resource, signal, sys, time
from pathlib import Path
from batchrun.core.result import RowResult
from batchrun.core.errors import StorageError
from batchrun.store.journal import JournalWriteError
from batchrun.store.rundir import RunDir
run = RunDir(Path(sys.argv[1]))
run.open_journal()
base = run.journal_path.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (base + int(sys.argv[2]), resource.RLIM_INFINITY))
for n in range(5):
    run.append(RowResult(id=f"r{n}", status="ok", content="x" * 100, line=n + 1), flush=False)
try:
    run.flush()
except JournalWriteError as error:
    print(error.kept)
    try:
        run.append(RowResult(id="late", status="ok", line=9))
    except StorageError as later:  # every write after the first failure is refused
        print("later", "File too large" in str(later))
"""


def test_a_flush_that_fails_part_way_says_which_lines_are_whole(tmp_path: Path) -> None:
    # A real short write: the file size limit stops the one write() of five pending lines
    # inside the third; the first two are whole in the journal and count, the rest do not.
    run = _opened(tmp_path)
    line_bytes = len(RowResult(id="r0", status="ok", content="x" * 100, line=1).to_json()) + 1
    done = subprocess.run([sys.executable, "-c", _PARTIAL_WRITE, str(run.path),
                           str(2 * line_bytes + 10)], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["2", "later True"]
    lines = run.journal_path.read_bytes().split(b"\n")
    assert [orjson.loads(line)["id"] for line in lines[:2]] == ["r0", "r1"]
    assert lines[2] == b'{"id":"r2"'  # torn (10 of its bytes): skipped on load
    index = run.load_index()
    assert index.records == 2 and index.torn_lines == 1


def test_the_index_record_layout_is_pinned() -> None:
    """journal.idx of earlier runs must stay readable: the layout is fixed, field by field."""
    assert RECORD.format == "<QIB3xQIII4xdQ" and RECORD.size == 56
    assert FIELD_AT == {
        "offset": (0, "Q"), "length": (8, "I"), "state": (12, "B"), "line": (16, "Q"),
        "prompt_tokens": (24, "I"), "completion_tokens": (28, "I"),
        "reasoning_tokens": (32, "I"), "credits": (40, "d"), "key": (48, "Q"),
    }
    assert Entry._fields == tuple(FIELD_AT)
    entries = [Entry(10, 20, STATE_OK, 3, 100, 200, 50, 0.25, 0xABCDEF),
               Entry(30, 40, STATE_FAILED, 7, 1, 2, 3, 1.5, 0)]
    data = memoryview(b"".join(pack(entry) for entry in entries))
    for name in Entry._fields:
        assert list(column(data, name)) == [getattr(entry, name) for entry in entries], name
    assert bytes(data[:56]).hex() == (
        "0a00000000000000" "14000000" "01" "000000" "0300000000000000" "64000000" "c8000000"
        "32000000" "00000000" "000000000000d03f" "efcdab0000000000")
