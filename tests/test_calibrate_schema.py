"""``estimate --calibrate`` of a job with an ``output_schema``: the sample's schema retries (tries
asked again because the answer did not fit) give the expected retry cost of the rows still to
send, shown as a line of its own and counted in the calibrated total."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.kit import (
    INVOICE_SCHEMA,
    fast_job,
    journal,
    run_cli,
    write_invoices,
    write_job,
    write_manifest,
)

from batchrun.core.result import record_credits
from batchrun.cost.catalog import price_for
from batchrun.cost.estimate import Band, RunEstimate
from batchrun.cost.schema_retries import SchemaRetries
from batchrun.emulator.server import EmulatorServer
from batchrun.plan.calibration import Calibration
from batchrun.store.index import JournalIndex

SCHEMA_FILE = INVOICE_SCHEMA



def test_the_calibrated_estimate_carries_the_sample_retry_cost(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(bad_json_rate=0.5)
    manifest = write_invoices(tmp_path / "invoices.jsonl", 120)
    job = write_job(tmp_path / "job.toml", output_schema=str(SCHEMA_FILE), schema_retries=2,
                    prompt_template="Extract the fields of this invoice:\n\n{text}",
                    include_thoughts=False)
    out = tmp_path / "run"
    result = run_cli(["estimate", str(manifest), "--job", str(job), "--calibrate", "30",
                      "--endpoint", server.base_url, "--out", str(out), "--yes", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    # What the journal holds: every try asked again, with what it cost.
    asked_again = [record for record in journal(out)
                   if record.get("error_code") == "schema_error" and record.get("retryable")]
    assert asked_again, "the emulator answered every sample row well: nothing was tested"
    retries = data["schema_retries"]
    assert retries["sample_rows"] == 30 and retries["tries"] == len(asked_again)
    assert retries["rate"] == pytest.approx(len(asked_again) / 30, abs=1e-6)
    per_try = sum(record_credits(record) for record in asked_again) / len(asked_again)
    assert retries["credits_per_try"] == pytest.approx(per_try, abs=1e-6)
    assert retries["rows_to_send"] == 90
    assert retries["expected_credits"] == pytest.approx(
        len(asked_again) / 30 * per_try * 90, rel=1e-4)
    # In the total: the calibrated whole run says it counts them.
    assert "schema retries:" in data["basis"]
    assert data["credits"]["expected"] > (data["already_spent"]["credits"]
                                          + retries["expected_credits"])
    # And a line of its own for people.
    line = next(line for line in result.stderr.splitlines()
                if line.startswith("  schema retries:"))
    assert f"{len(asked_again):,} tries asked again over 30 sample rows" in line
    assert "90 rows still to send (in the total above)" in line

    # The rest of the run, paid: its retries were foreseen. The sample's tokens are compared
    # with the preflight's own estimate of its rows (the schema's text counted in both).
    assert data["calibration"]["prompt_ratio"] < 1.5
    ran = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out), "--endpoint",
                   server.base_url, "--yes", "--quiet", "--json"])
    assert ran.exit_code in (0, 1), ran.output
    real = json.loads(ran.stdout)["credits"]
    expected = data["credits"]["expected"]
    assert abs(expected - real) < 0.1 * real, (expected, real)
    without_retries = expected - retries["expected_credits"]
    assert abs(without_retries - real) > abs(expected - real), (without_retries, real)


def test_a_job_without_a_schema_shows_no_retry_cost(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "rows.jsonl", 40)
    result = run_cli(["estimate", str(manifest), "--job", str(fast_job(tmp_path)), "--calibrate",
                      "10", "--endpoint", emulator.base_url, "--out", str(tmp_path / "run"),
                      "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert "schema_retries" not in json.loads(result.stdout)
    assert "schema retries" not in result.stderr


def test_the_whole_run_adds_the_expected_retries_to_the_rows_to_send(tmp_path: Path) -> None:
    price = price_for("gemini-3.1-pro")
    spent = RunEstimate(rows=10, credits=Band.exact(1.0))
    remaining = RunEstimate(rows=90, prompt_tokens=9000, credits=Band(4.0, 5.0, 6.0))
    retries = SchemaRetries(rows=10, tries=4, credits=0.2, prompt_tokens=800,
                            completion_tokens=400)
    projected = retries.projected(90, price)
    # 0.4 tries a row over 90 rows, at 0.05 credits a try
    assert projected.credits.expected == pytest.approx(1.8)
    assert projected.prompt_tokens == 7200 and projected.output_tokens.expected == 3600
    calibration = Calibration(fit=None, sent=10, reused=0, failed=0, outcome=None,
                              remaining=remaining, spent=spent,
                              index=JournalIndex(tmp_path / "journal.jsonl"),
                              schema_retries=retries, retries_remaining=projected)
    whole = calibration.whole_run
    assert whole is not None
    assert whole.credits.as_dict() == pytest.approx({"low": 6.8, "expected": 7.8, "high": 8.8})
    assert whole.rows == 100 and whole.prompt_tokens == 16200
    none_asked = SchemaRetries(rows=10, tries=0, credits=0.0)
    assert none_asked.projected(90, price).credits.expected == 0.0
    assert "none expected" in none_asked.line(90, price)
