"""The circuit breaker: its rules on plain values, then whole runs that it stops early."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support.kit import by_id, latest, run_cli, write_job, write_manifest

from batchrun.core.result import RowResult
from batchrun.dispatch.breaker import CircuitBreaker
from batchrun.emulator.server import EmulatorServer

MakeEmulator = Callable[..., EmulatorServer]


def ok(row_id: str = "r") -> RowResult:
    return RowResult(id=row_id, status="ok")


def failed(row_id: str = "r", code: str = "invalid_request", *, retryable: bool = False,
           message: str = "'model' is required.") -> RowResult:
    """A row the API refused (it was sent)."""
    return RowResult(id=row_id, status="error", error_code=code, http_status=400,
                     error_message=message, retryable=retryable, attempts=1)


def unsendable(row_id: str = "r") -> RowResult:
    """A row that failed before it was sent: its own input."""
    return RowResult(id=row_id, status="error", error_code="media_error",
                     error_message="media file not found: gone.png", attempts=0)


# ---------------------------------------------------------------- the rules


def test_first_rows_failing_alike_trip_on_the_nth() -> None:
    breaker = CircuitBreaker(first_n=5, window=0)
    for number in range(4):
        assert breaker.observe(failed(f"r{number}")) is None
    trip = breaker.observe(failed("r4"))
    assert trip is not None
    assert "the first 5 rows all failed with 400 invalid_request ('model' is required.)" in (
        trip.error.message)
    assert [row.id for row in trip.reopen] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(row.retryable for row in trip.reopen)
    assert breaker.observe(failed("r5")) is None  # trips once


def test_first_rows_rule_disarms_on_a_success_or_another_error() -> None:
    breaker = CircuitBreaker(first_n=3, window=0)
    breaker.observe(failed("a"))
    breaker.observe(ok("b"))
    assert all(breaker.observe(failed(f"c{n}")) is None for n in range(10))

    breaker = CircuitBreaker(first_n=3, window=0)
    breaker.observe(failed("a"))
    breaker.observe(failed("b", "media_error"))
    assert all(breaker.observe(failed(f"c{n}")) is None for n in range(10))


def test_first_rows_rule_ignores_retryable_failures() -> None:
    # Rows that exhausted their retries (503 …) are the window rule's business.
    breaker = CircuitBreaker(first_n=3, window=0)
    assert all(breaker.observe(failed(f"r{n}", "upstream_error", retryable=True)) is None
               for n in range(10))


def test_window_rule_trips_at_the_rate_and_names_the_commonest_error() -> None:
    breaker = CircuitBreaker(first_n=0, window=10, rate=0.5)
    pattern = [ok(), failed(code="upstream_error", retryable=True)] * 4  # 4 of 8 failed
    assert all(breaker.observe(row) is None for row in pattern)
    assert breaker.observe(ok()) is None  # 4 of 9: window not full yet
    trip = breaker.observe(failed("x", code="upstream_error", retryable=True))
    assert trip is not None  # 5 of 10
    message = trip.error.message
    assert "5 of the last 10 rows failed (50%, breaker at 50%)" in message
    assert "most of them (5) with 400 upstream_error" in message
    assert trip.reopen == ()  # already retryable


def test_window_rule_slides() -> None:
    breaker = CircuitBreaker(first_n=0, window=4, rate=0.75)
    rows = [failed(code="e", retryable=True), failed(code="e", retryable=True), ok(), ok(),
            failed(code="e", retryable=True), failed(code="e", retryable=True)]
    assert all(breaker.observe(row) is None for row in rows)  # never 3 of the last 4
    assert breaker.observe(failed(code="e", retryable=True)) is not None  # now 3 of 4


def test_rows_in_flight_after_the_trip_stay_retryable() -> None:
    breaker = CircuitBreaker(first_n=2, window=0)
    breaker.observe(failed("a"))
    assert breaker.observe(failed("b")) is not None
    assert breaker.after_trip(failed("c")).retryable
    assert not breaker.after_trip(failed("d", "media_error")).retryable  # another cause
    assert breaker.after_trip(ok("e")).ok


def test_zero_turns_both_rules_off() -> None:
    breaker = CircuitBreaker(first_n=0, window=0)
    assert all(breaker.observe(failed(f"r{n}")) is None for n in range(1000))


def test_rows_that_failed_before_sending_count_for_neither_rule() -> None:
    breaker = CircuitBreaker(first_n=5, window=10, rate=0.5)
    for number in range(100):
        assert breaker.observe(unsendable(f"u{number}")) is None
    # Both rules still start from nothing: the first rows armed, the window empty.
    for number in range(4):
        assert breaker.observe(failed(f"r{number}")) is None
    assert breaker.observe(failed("r4")) is not None


# ---------------------------------------------------------------- whole runs


def test_rows_with_missing_media_among_good_ones_never_stop_the_run(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    # Every other row names a file that is not there: those fail at once, before the good
    # rows' answers arrive (200 ms), so they are the first 30 rows to finish.
    emulator = make_emulator(latency_ms=200)
    (tmp_path / "pic.png").write_bytes(
        (Path(__file__).parent.parent / "sample_inputs/media/chart.png").read_bytes())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(
        json.dumps({"id": f"r{n}", "prompt": "Describe it.",
                    "media": ["pic.png" if n % 2 else f"missing-{n}.png"]}) + "\n"
        for n in range(60)))
    job = write_job(tmp_path / "job.toml", concurrency=64)  # every row taken at once
    args = ["run", str(manifest), "--job", str(job), "--out", str(tmp_path / "run"),
            "--endpoint", emulator.base_url, "--yes"]
    result = run_cli(args)
    assert result.exit_code == 1, result.output
    assert "circuit breaker" not in result.output
    rows = by_id(tmp_path / "run")
    assert len(rows) == 60
    assert all(row["status"] == "ok" for name, row in rows.items() if int(name[1:]) % 2)
    assert all(row["error_code"] == "media_error" and row["attempts"] == 0
               for name, row in rows.items() if not int(name[1:]) % 2)
    sent = emulator.stats.requests_total
    assert sent == 30
    again = run_cli(args)  # nothing to send again: the bad rows' errors are their own
    assert again.exit_code == 1, again.output
    assert emulator.stats.requests_total == sent




def test_rows_that_are_bad_on_their_own_trip_it_and_the_way_past_is_named(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    # The first 30 rows carry a message the API refuses (400), the last 10 are good: the
    # first-rows rule takes them for a job the gateway refuses. The stop names the way past
    # it for rows that are at fault themselves, and that way ends the run with row errors.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(
        json.dumps({"id": f"r{n}", "messages": [
            {"role": "bogus" if n < 30 else "user", "content": f"q{n}"}]}) + "\n"
        for n in range(40)))
    job = write_job(tmp_path / "job.toml", concurrency=4)
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", emulator.base_url]
    stopped = run_cli(args)
    assert stopped.exit_code == 3, stopped.output
    assert "the first 20 rows all failed with 400 invalid_request" in stopped.output
    assert "resume with --breaker-first 0" in " ".join(stopped.output.split())
    finished = run_cli([*args, "--breaker-first", "0"])
    assert finished.exit_code == 1, finished.output
    rows = by_id(out)
    assert len(rows) == 40
    assert all(rows[f"r{n}"]["error_code"] == "invalid_request" for n in range(30))
    assert all(rows[f"r{n}"]["status"] == "ok" for n in range(30, 40))


def test_breaker_stops_a_run_whose_job_the_gateway_refuses(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 400)
    bad_job = write_job(tmp_path / "bad.toml", concurrency=4,
                        extra_body={"reasoning_effort": "medium"})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(bad_job), "--out", str(out),
                      "--endpoint", emulator.base_url])
    assert result.exit_code == 3, result.output
    assert ("circuit breaker: the first 20 rows all failed with 400 invalid_request "
            "('reasoning_effort' must be 'low' or 'high'.)") in result.output
    assert "run the same command to resume" in result.output
    # Stopped after about 20 requests, not 400; the rest is pending.
    assert emulator.stats.requests_total <= 20 + 4
    status = json.loads(run_cli(["status", str(out), "--json"]).output)
    assert status["rows_pending"] == 400 - len(latest(out)) >= 400 - 24
    assert status["rows_retryable"] == status["rows_failed"] == len(latest(out))
    # The failed rows were the job's fault: recorded as retryable, so the fixed job resends them.
    assert all(line["retryable"] for line in latest(out).values())

    good_job = write_job(tmp_path / "bad.toml", concurrency=4)  # the job, fixed in place
    again = run_cli(["run", str(manifest), "--job", str(good_job), "--out", str(out),
                     "--endpoint", emulator.base_url])
    assert again.exit_code == 0, again.output
    rows = by_id(out)
    assert len(rows) == 400 and all(row["status"] == "ok" for row in rows.values())


def test_breaker_stops_a_run_when_most_recent_rows_fail(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(fail_503=1.0)  # the upstream is down for good
    manifest = write_manifest(tmp_path / "m.jsonl", 1000)
    job = write_job(tmp_path / "job.toml", concurrency=8, max_attempts=1)
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url, "--breaker-window", "50", "--breaker-rate", "0.8"]
    result = run_cli(args)
    assert result.exit_code == 3, result.output
    assert "circuit breaker: 50 of the last 50 rows failed (100%, breaker at 80%)" in (
        result.output)
    assert "503 upstream_error (Upstream AI provider returned an error.)" in result.output
    assert "--breaker-window 50 --breaker-rate 0.8" in result.output  # in the resume command
    assert server.stats.requests_total < 50 + 8 + 1
    server.config.fail_503 = 0.0  # the upstream is back
    again = run_cli(args)
    assert again.exit_code == 0, again.output
    assert len(by_id(out)) == 1000


def test_breaker_off_lets_every_row_fail_one_by_one(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 40)
    job = write_job(tmp_path / "job.toml", extra_body={"reasoning_effort": "medium"})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", emulator.base_url, "--breaker-first", "0",
                      "--breaker-window", "0"])
    assert result.exit_code == 1, result.output
    assert "circuit breaker" not in result.output
    assert emulator.stats.requests_total == 40
