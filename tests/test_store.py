"""The run directory on real files: journal, torn lines, lock, compaction to Parquet."""

from __future__ import annotations

import subprocess
import sys
import time
from array import array
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchrun import store
from batchrun.errors import InputError
from batchrun.result import RESULTS_SCHEMA, RowResult
from batchrun.store import RunDir, RunLockedError, run_info, superseded_lines
from batchrun.summary import summarize


def _info(tmp_path: Path, fingerprint: str = "f1") -> dict[str, object]:
    return run_info(manifest=tmp_path / "m.jsonl", fingerprint=fingerprint, job={"model": "x"},
                    endpoint="http://127.0.0.1:1/v1", rows_total=3)


def _ok(row_id: str, credits: float = 0.5) -> RowResult:
    return RowResult(id=row_id, status="ok", content=f"answer {row_id}", prompt_tokens=10,
                     completion_tokens=20, reasoning_tokens=5, total_tokens=35, credits=credits,
                     attempts=1, started_at=time.time(), finished_at=time.time())


def test_journal_latest_line_wins_and_compacts(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.prepare(_info(tmp_path)) is False
    run.open_journal()
    run.append(RowResult(id="a", status="error", error_code="upstream_error", retryable=True))
    run.append(_ok("b"))
    run.append(_ok("a", credits=0.25))
    run.release()

    index = run.load_index()
    assert set(index.rows) == {"a", "b"}
    assert index.rows["a"].ok and index.rows["a"].credits == 0.25
    assert index.is_done("a", retry_failed=False)

    written = run.compact({"totals": {"rows": 2}})
    table = pq.read_table(run.results_path)
    assert written == 2 == table.num_rows
    assert table.schema.remove_metadata() == RESULTS_SCHEMA
    assert sorted(table.column("id").to_pylist()) == ["a", "b"]
    assert b"batchrun" in table.schema.metadata


def test_retryable_errors_are_resent_final_errors_only_on_request(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path))
    run.open_journal()
    run.append(RowResult(id="r", status="error", error_code="upstream_error", retryable=True))
    run.append(RowResult(id="f", status="error", error_code="invalid_request"))
    run.release()
    index = run.load_index()
    assert not index.is_done("r", retry_failed=False)
    assert index.is_done("f", retry_failed=False)
    assert not index.is_done("f", retry_failed=True)


def test_torn_last_line_is_skipped_and_repaired(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path))
    run.open_journal()
    run.append(_ok("a"))
    run.release()
    with open(run.journal_path, "ab") as handle:
        handle.write(b'{"id": "b", "status": "o')  # killed mid-write
    assert set(run.load_index().rows) == {"a"}
    run.prepare(_info(tmp_path))
    run.open_journal()
    run.append(_ok("c"))
    run.release()
    assert set(run.load_index().rows) == {"a", "c"}


def test_a_different_manifest_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path, "f1"))
    run.release()
    with pytest.raises(InputError, match="different manifest"):
        RunDir(tmp_path / "run").prepare(_info(tmp_path, "f2"))
    assert RunDir(tmp_path / "run").prepare(_info(tmp_path, "f1")) is True


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
    finally:
        holder.kill()
        holder.wait()
    run = RunDir(path)
    assert run.prepare(_info(tmp_path)) is True  # the stale lock of a killed process is free
    run.release()


def test_unwritable_run_directory_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot create run directory"):
        RunDir(blocker / "run").prepare(_info(tmp_path))


def test_superseded_lines_pairs_each_repeat_with_the_next_one() -> None:
    assert superseded_lines(array("Q", [5, 3, 5, 1, 3, 5])) == {0: 2, 2: 5, 1: 4}
    assert superseded_lines(array("Q", [1, 2, 3])) == {}
    assert superseded_lines(array("Q", [])) == {}
    assert superseded_lines(array("Q", [2**64 - 1, 2**64 - 1])) == {0: 1}


def _journal_of(run: RunDir, ids: list[str]) -> None:
    run.open_journal()
    for number, row_id in enumerate(ids):
        run.append(RowResult(id=row_id, status="error" if number % 2 else "ok",
                             error_code="upstream_error", retryable=True, attempts=number))
    run.release()


def test_latest_records_keep_journal_order_and_the_last_line_of_each_id(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path))
    _journal_of(run, ["a", "b", "c", "b", "d", "a", "b"])
    latest = [(r["id"], r["attempts"]) for r in run.latest_records()]
    assert latest == [("c", 2), ("d", 4), ("a", 5), ("b", 6)]
    summary = summarize(run.latest_states(), rows_total=5)
    assert (summary.rows_ok, summary.rows_failed, summary.rows_pending) == (3, 1, 1)
    assert summary.as_dict() == summarize(run.load_index(), rows_total=5).as_dict()


def test_a_hash_collision_never_drops_a_row(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(_info(tmp_path))
    _journal_of(run, ["a", "b", "a", "c"])
    monkeypatch.setattr(store, "_id_key", lambda row_id: 7)  # every id collides
    assert [r["id"] for r in run.latest_records()] == ["b", "a", "c"]
    run.compact({})
    assert pq.read_table(run.results_path).column("id").to_pylist() == ["b", "a", "c"]
