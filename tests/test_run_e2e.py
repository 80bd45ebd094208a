"""``batchrun run`` end to end over real HTTP against the project's emulator on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.kit import KEY, fast_job, results, run_cli, write_manifest

from batchrun.core.result import RESULTS_SCHEMA
from batchrun.cost.catalog import CATALOG
from batchrun.emulator.server import EmulatorServer
from batchrun.store.rundir import RunDir

PRICE = CATALOG["gemini-3.1-pro"].price


def test_sample_job_runs_on_the_embedded_emulator(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    result = run_cli(["run", str(root / "sample_inputs/sample.jsonl"), "--job",
                      str(root / "jobs/sample.toml"), "--out", str(out), "--emulate"], key=None)
    assert result.exit_code == 0, result.output
    rows = results(out)
    manifest_rows = (root / "sample_inputs/sample.jsonl").read_text().splitlines()
    assert len(rows) == len(manifest_rows)
    assert all(row["status"] == "ok" and row["content"] for row in rows)
    table = pq.read_table(out / "results.parquet")
    assert table.schema.remove_metadata() == RESULTS_SCHEMA
    metadata = json.loads(table.schema.metadata[b"batchrun"])
    assert metadata["model"] == "gemini-3.1-pro" and metadata["totals"]["rows_ok"] == len(rows)
    # Each field under its own key too: job, model, endpoint (no key), version, fingerprint,
    # totals.
    flat = table.schema.metadata
    assert flat[b"model"] == b"gemini-3.1-pro" and flat[b"endpoint"].startswith(b"http://127.")
    assert flat[b"batchrun_version"] and flat[b"manifest_fingerprint"]
    assert json.loads(flat[b"job"])["model"] == "gemini-3.1-pro"
    assert json.loads(flat[b"totals"]) == metadata["totals"]


@pytest.mark.slow  # ~25 s: 1,000 rows held to 3,000/min, a quarter failing at first
def test_faulty_api_ends_all_ok_with_formula_credits_and_counted_attempts(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(fail_503=0.2, fail_500=0.05, rpm=3000)
    manifest = write_manifest(tmp_path / "m.jsonl", 1000)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=64, max_attempts=10, stream=False)
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--rpm", "3000", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = results(out)
    assert len(rows) == 1000 and {row["id"] for row in rows} == {f"row-{n}" for n in range(1000)}
    assert all(row["status"] == "ok" for row in rows)
    for row in rows:
        formula = PRICE.credits(row["prompt_tokens"], row["completion_tokens"])
        assert row["credits"] == pytest.approx(formula, abs=1e-9)
        assert row["credits_computed"] == pytest.approx(formula, abs=1e-12)
    assert server.stats.requests_total == sum(row["attempts"] for row in rows)
    assert server.stats.by_status[503] > 0 and server.stats.by_status[500] > 0


def test_streaming_run_keeps_thoughts_apart_from_content(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 20)
    out = tmp_path / "run"
    job = fast_job(tmp_path, stream=True, include_thoughts=True, reasoning_effort="high")
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", emulator.base_url])
    assert result.exit_code == 0, result.output
    rows = results(out)
    assert all(row["thoughts"] and row["reasoning_tokens"] > 0 for row in rows)
    assert not any("<thought>" in row["content"] for row in rows)
    for row in rows:
        assert row["total_tokens"] == (
            row["prompt_tokens"] + row["completion_tokens"] + row["reasoning_tokens"]
        )


# (emulator knobs, job fields, expected exit code, expected error code, fatal?)
ERROR_TABLE = [
    pytest.param({}, {"extra_body": {"reasoning_effort": "medium"}}, 1, "invalid_request",
                 False, id="400-invalid_request"),
    pytest.param({"revoke_after": 0}, {}, 3, "invalid_api_key", True, id="401-invalid_api_key"),
    pytest.param({"balance": 0.0}, {}, 3, "insufficient_credits", True,
                 id="402-insufficient_credits"),
    pytest.param({"deny_ip": True}, {}, 3, "ip_not_allowed", True, id="403-ip_not_allowed"),
    # A model batchrun cannot price is refused before sending (test_cost_truth): priced here.
    pytest.param({}, {"model": "gemini-0-nonexistent", "price": {"input": 160, "output": 960}},
                 3, "model_not_found", True,
                 id="404-model_not_found"),
    pytest.param({"spend_limit": 0.0}, {}, 3, "spend_limit_exceeded", True,
                 id="429-spend_limit_exceeded"),
    pytest.param({"fail_500": 1.0}, {"max_attempts": 2}, 1, "internal_error", False,
                 id="500-internal_error"),
    pytest.param({"fail_503": 1.0}, {"max_attempts": 2}, 1, "upstream_error", False,
                 id="503-upstream_error"),
]


@pytest.mark.parametrize(("knobs", "job_fields", "exit_code", "code", "fatal"), ERROR_TABLE)
def test_every_gateway_error_ends_as_documented(
    tmp_path: Path,
    make_emulator: Callable[..., EmulatorServer],
    knobs: dict[str, Any],
    job_fields: dict[str, Any],
    exit_code: int,
    code: str,
    fatal: bool,
) -> None:
    server = make_emulator(**knobs)
    manifest = write_manifest(tmp_path / "m.jsonl", 30)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=2, **job_fields)
    # --breaker-first 0: 30 rows failing alike would trip the circuit breaker (tests/test_breaker).
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--ignore-balance", "--breaker-first", "0"])
    assert result.exit_code == exit_code, result.output
    rows = results(out)
    errors = [row for row in rows if row["status"] == "error"]
    assert errors and all(row["error_code"] == code for row in errors)
    assert KEY not in result.output
    if fatal:
        # Dispatch stopped: at most the requests in flight got the fatal answer.
        assert len(rows) <= 2
        assert f"--out {out}" in result.output and "batchrun run" in result.output
    else:
        assert len(rows) == 30
        expected_attempts = job_fields.get("max_attempts", 1)
        assert all(row["attempts"] == expected_attempts for row in rows)


def test_rate_limited_requests_are_retried_after_the_servers_hint(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(rpm=120)  # 2/s; batchrun is not told, so it meets 429s
    manifest = write_manifest(tmp_path / "m.jsonl", 12)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=8, max_attempts=20, max_retry_wait_s=5)
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url])
    assert result.exit_code == 0, result.output
    assert server.stats.by_status[429] > 0
    assert all(row["status"] == "ok" for row in results(out))


def test_402_midway_keeps_every_paid_row_and_resumes_without_paying_twice(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 200)
    one_row = 0.2  # roughly a row's cost in the emulator, well above the formula's typical
    server = make_emulator(balance=40 * one_row / 4)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=4)
    args = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url, "--ignore-balance"]
    first = run_cli(args)
    assert first.exit_code == 3, first.output
    assert "insufficient_credits" in first.output and "top up" in first.output
    assert f"batchrun run {manifest} --out {out}" in first.output
    rows = results(out)
    ok_rows = [row for row in rows if row["status"] == "ok"]
    assert 0 < len(ok_rows) < 200
    assert len(ok_rows) == server.stats.billed_requests  # every paid answer is kept

    server.config.balance = 1_000_000.0
    second = run_cli(args)
    assert second.exit_code == 0, second.output
    rows = results(out)
    assert len(rows) == 200 and all(row["status"] == "ok" for row in rows)
    assert max(server.stats.billed_by_body.values()) == 1  # nobody paid twice


def test_missing_key_and_missing_manifest_are_usage_errors(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 1)
    no_key = run_cli(["run", str(manifest), "--out", str(tmp_path / "r")], key=None)
    assert no_key.exit_code == 2 and "BATCHRUN_API_KEY" in no_key.output
    missing = run_cli(["run", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "manifest not found" in missing.output


def test_duplicate_ids_stop_before_sending(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n'
                        '{"id": "a", "prompt": "z"}\n')
    result = run_cli(["run", str(manifest), "--out", str(tmp_path / "r"),
                      "--endpoint", emulator.base_url])
    assert result.exit_code == 2
    assert "'a'" in result.output and "1" in result.output and "3" in result.output
    assert emulator.stats.requests_total == 0


def test_bad_rows_become_error_rows_and_the_rest_run(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"id": "good", "prompt": "hello"}\n{not json\n'
                         b'{"id": "noprompt"}\n\xff\xfe\n{"id": "good2", "prompt": "hi"}\n')
    out = tmp_path / "r"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url])
    assert result.exit_code == 1, result.output
    by_id = {row["id"]: row for row in results(out)}
    assert by_id["good"]["status"] == by_id["good2"]["status"] == "ok"
    bad = [row for row in by_id.values() if row["status"] == "error"]
    assert len(bad) == 3 and all(row["error_message"] for row in bad)
    assert emulator.stats.requests_total == 2


def test_a_different_manifest_in_the_same_run_dir_is_refused(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    out = tmp_path / "r"
    first = run_cli(["run", str(write_manifest(tmp_path / "a.jsonl", 3)), "--out", str(out),
                     "--endpoint", emulator.base_url])
    assert first.exit_code == 0, first.output
    other = run_cli(["run", str(write_manifest(tmp_path / "b.jsonl", 4, prefix="b")), "--out",
                     str(out), "--endpoint", emulator.base_url])
    assert other.exit_code == 2 and "different manifest" in other.output
    again = run_cli(["run", str(tmp_path / "a.jsonl"), "--out", str(out),
                     "--endpoint", emulator.base_url])
    assert again.exit_code == 0
    assert emulator.stats.requests_total == 3  # the resume sent nothing


def test_rows_that_finish_together_reach_the_journal_in_one_write(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every row finished in one turn of the event loop goes to the kernel in one write;
    # none is written twice or left behind, and each counts once.
    batches: list[int] = []
    real_flush = RunDir.flush

    def counting_flush(self: RunDir) -> None:
        batches.append(len(self._pending))
        real_flush(self)

    monkeypatch.setattr(RunDir, "flush", counting_flush)
    manifest = write_manifest(tmp_path / "m.jsonl", 600)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path, concurrency=64)),
                      "--out", str(out), "--endpoint", emulator.base_url])
    assert result.exit_code == 0, result.output
    assert sum(batches) == 600 and max(batches) > 1, batches
    lines = (out / "journal.jsonl").read_bytes().splitlines()
    assert len(lines) == 600 and len({json.loads(line)["id"] for line in lines}) == 600
    assert "done: 600 ok · 0 failed · 0 pending of 600 rows" in result.output
