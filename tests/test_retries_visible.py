"""Retries are visible: counted by cause (status and error code of the failed attempts) with
the time they cost, in the run's final summary, in ``status`` and ``status --json``
(``retries``), within a session and across a resume that sends failed rows again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support.kit import fast_job, run_cli, status_json, write_manifest

from batchrun.emulator.server import EmulatorServer
from batchrun.store.retries import CAUSE_NOT_RECORDED, fold_retries

CAUSE = "503 upstream_error"



def test_retries_after_503s_are_counted_in_the_summary_and_status(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(fail_503=0.3, seed=7, latency_ms=5)
    manifest = write_manifest(tmp_path / "m.jsonl", 40)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path, max_attempts=12)),
                      "--out", str(out), "--endpoint", server.base_url])
    assert result.exit_code == 0, result.output
    served = server.stats.faults["503"]
    assert served > 0

    retries = status_json(out)["retries"]
    assert isinstance(retries, dict)
    assert retries["total"] == served and retries["by_cause"] == {CAUSE: served}
    assert 0 < retries["rows"] <= served and retries["seconds"] > 0
    line = f"retries: {served:,} over {retries['rows']:,} rows ({CAUSE} ×{served:,}); "
    assert line in result.output  # the run's final summary
    human = run_cli(["status", str(out)])
    assert line in human.output


def test_a_row_sent_again_by_a_resume_counts_its_last_failure_as_a_retry(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(fail_503=1.0)
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    job = fast_job(tmp_path, max_attempts=2, breaker_first=0, breaker_window=0)
    base = ["run", str(manifest), "--job", str(job), "--out", str(tmp_path / "run"),
            "--endpoint", server.base_url]
    failed = run_cli(base)
    assert failed.exit_code == 1, failed.output  # retries ran out: rows failed, resumable
    first = status_json(tmp_path / "run")["retries"]
    assert first == {"total": 3, "rows": 3, "seconds": first["seconds"],  # type: ignore[index]
                     "by_cause": {CAUSE: 3}}

    server.config.fail_503 = 0.0
    resumed = run_cli(base)
    assert resumed.exit_code == 0, resumed.output
    retries = status_json(tmp_path / "run")["retries"]
    assert retries["total"] == server.stats.faults["503"] == 6  # type: ignore[index]
    assert retries["by_cause"] == {CAUSE: 6}  # type: ignore[index]


def test_lines_without_causes_and_reused_or_remarked_lines() -> None:
    older = {"id": "a", "status": "ok", "attempts": 3, "started_at": 0.0, "finished_at": 5.0,
             "latency_ms": 1000.0}  # written before causes were recorded
    failed = {"id": "b", "status": "error", "attempts": 1, "failed_attempts": ["400 bad"],
              "started_at": 0.0, "finished_at": 1.0}
    remarked = {**failed, "retryable": True}  # the circuit breaker marks it again
    reused = {"id": "b", "status": "ok", "attempts": 0, "reused_from": "/old",
              "started_at": 9.0, "finished_at": 9.0}
    totals = fold_retries([older, failed, remarked, reused])
    assert totals.as_dict() == {"total": 2, "rows": 1, "seconds": 4.0,
                                "by_cause": {CAUSE_NOT_RECORDED: 2}}
