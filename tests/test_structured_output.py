"""Structured output: a job's output_schema is told to the model, answers are cleaned, parsed
and validated, an answer that does not fit is asked again (every try paid, journaled and
counted), and ``export --flatten`` writes the schema's fields as typed Parquet columns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.kit import INVOICE_SCHEMA, by_id, journal, run_cli, write_invoices, write_job

from batchrun.api.structured import check_answer
from batchrun.emulator.server import EmulatorServer
from batchrun.emulator.structured import SCHEMA_HEADING as EMULATOR_HEADING
from batchrun.request.structured import SCHEMA_HEADING

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = INVOICE_SCHEMA
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
EXPECTED_TYPES = {"vendor": pa.string(), "invoice_number": pa.string(), "date": pa.date32(),
                  "currency": pa.string(), "total": pa.float64(), "line_count": pa.int64(),
                  "paid": pa.bool_()}



def test_a_500_row_extraction_validates_or_says_why_and_counts_every_try(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(bad_json_rate=0.6)
    manifest = write_invoices(tmp_path / "invoices.jsonl", 500)
    job = write_job(tmp_path / "job.toml", output_schema=str(SCHEMA_FILE), schema_retries=2,
                    prompt_template="Extract the fields of this invoice:\n\n{text}",
                    concurrency=32, include_thoughts=False)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet", "--breaker-first", "0"])
    assert result.exit_code in (0, 1), result.output

    rows = by_id(out)
    assert len(rows) == 500
    fitted = [row for row in rows.values() if row["parsed"] is not None]
    never = [row for row in rows.values() if row["schema_error"] is not None]
    assert len(fitted) + len(never) == 500 and fitted and never
    for row in fitted:
        assert row["status"] == "ok" and row["schema_error"] is None
        jsonschema.validate(json.loads(row["parsed"]), SCHEMA)
    for row in never:
        assert row["status"] == "error" and row["error_code"] == "schema_error"
        assert row["attempts"] == 3 and row["parsed"] is None  # the first try and 2 re-asks
        assert "after 3 tries" in row["error_message"]
    # Fenced and thought-wrapped answers were cleaned, not asked again: some rows fitted at
    # once though 60% of the answers were badly formed.
    assert sum(row["attempts"] == 1 for row in fitted) > 150
    assert any(row["attempts"] > 1 for row in fitted)

    # Every try was paid, journaled and counted.
    stats = server.stats
    attempts = sum(row["attempts"] for row in rows.values())
    assert stats.requests_total == stats.billed_requests == attempts
    assert len(journal(out)) == stats.billed_requests
    status = json.loads(run_cli(["status", str(out), "--json"]).stdout)
    assert status["credits"] == pytest.approx(stats.credits_billed, abs=1e-6)
    assert status["rows_failed"] == len(never) and status["errors_by_code"] == {
        "schema_error": len(never)}

    # The prompt told the schema; the gateway gets no response_format.
    assert SCHEMA_HEADING == EMULATOR_HEADING

    target = tmp_path / "flat.parquet"
    exported = run_cli(["export", str(out), "--output", str(target), "--flatten"])
    assert exported.exit_code == 0, exported.output
    table = pq.read_table(target)
    for name, arrow_type in EXPECTED_TYPES.items():
        assert table.schema.field(name).type == arrow_type, name
    flat = {row["id"]: row for row in table.to_pylist()}
    for row in fitted:
        parsed = json.loads(row["parsed"])
        assert flat[row["id"]]["vendor"] == parsed["vendor"]
        assert flat[row["id"]]["line_count"] == parsed["line_count"]
        assert flat[row["id"]]["date"].isoformat() == parsed["date"]
    assert all(flat[row["id"]]["vendor"] is None for row in never)


def test_the_schema_is_in_the_prompt_and_response_format_only_where_known(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(record_requests=True)
    manifest = write_invoices(tmp_path / "invoices.jsonl", 2)
    common = dict(output_schema=str(SCHEMA_FILE), prompt_template="Invoice: {text}",
                  system="Be exact.")
    for mode, expect_format in (("auto", False), ("always", True)):
        server.stats.reset()
        job = write_job(tmp_path / f"{mode}.toml", schema_response_format=mode, **common)
        result = run_cli(["run", str(manifest), "--job", str(job), "--out",
                          str(tmp_path / mode), "--endpoint", server.base_url, "--quiet"])
        assert result.exit_code == 0, result.output
        for body in server.stats.requests_seen:
            system = body["messages"][0]
            assert system["role"] == "system" and system["content"].startswith("Be exact.")
            assert SCHEMA_HEADING in system["content"]
            assert ("response_format" in body) is expect_format


def test_a_rows_own_schema_overrides_the_jobs(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator()
    own = {"type": "object", "properties": {"answer": {"type": "integer"}},
           "required": ["answer"]}
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(
        json.dumps({"id": "own", "prompt": "2+2?", "output_schema": own}) + "\n"
        + json.dumps({"id": "job", "prompt": "Invoice 1 from vendor 1"}) + "\n"
        + json.dumps({"id": "bad", "prompt": "x", "output_schema": {"type": 12}}) + "\n")
    job = write_job(tmp_path / "job.toml", output_schema=str(SCHEMA_FILE))
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code == 1, result.output
    rows = by_id(out)
    assert set(json.loads(rows["own"]["parsed"])) == {"answer"}
    assert "vendor" in json.loads(rows["job"]["parsed"])
    assert rows["bad"]["attempts"] == 0
    assert "column output_schema: column output_schema is not a valid JSON Schema" in (
        rows["bad"]["error_message"])


def test_a_missing_schema_file_stops_before_anything_is_sent(tmp_path: Path) -> None:
    manifest = write_invoices(tmp_path / "invoices.jsonl", 2)
    job = write_job(tmp_path / "job.toml", output_schema="nowhere.json",
                    prompt_template="{text}")
    result = run_cli(["estimate", str(manifest), "--job", str(job)])
    assert result.exit_code == 2 and "nowhere.json cannot be read" in result.output


@pytest.mark.parametrize("content, fits", [
    ('{"answer": 4}', True),
    ('```json\n{"answer": 4}\n```', True),
    ('<thought>add them</thought>{"answer": 4}', True),
    ('Sure! Here it is: {"answer": 4} Hope this helps.', True),
    ('{"answer": "four"}', False),
    ('{}', False),
    ('{"answer": ', False),
])
def test_answers_are_cleaned_then_validated(content: str, fits: bool) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    checked = check_answer(content, schema)
    assert checked.fits is fits
    assert (checked.parsed == '{"answer":4}') is fits


def test_the_shipped_extraction_job_runs_and_flattens(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(bad_json_rate=0.3)
    out = tmp_path / "run"
    result = run_cli(["run", str(ROOT / "sample_inputs/invoices.jsonl"), "--job",
                      str(ROOT / "jobs/extract_invoice_fields.toml"), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code in (0, 1), result.output
    target = tmp_path / "invoices.jsonl"
    assert run_cli(["export", str(out), "--output", str(target), "--flatten"]).exit_code == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert (line["parsed"] is None) == (line["vendor"] is None)


def test_a_reused_answer_keeps_its_parsed_json(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator()
    manifest = write_invoices(tmp_path / "invoices.jsonl", 5)
    job = write_job(tmp_path / "job.toml", output_schema=str(SCHEMA_FILE),
                    prompt_template="{text}")
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["run", str(manifest), "--job", str(job), "--endpoint", server.base_url, "--quiet"]
    assert run_cli([*base, "--out", str(first)]).exit_code == 0
    assert run_cli([*base, "--out", str(second), "--reuse", str(first)]).exit_code == 0
    assert server.stats.billed_requests == 5
    reused = by_id(second)
    assert all(row["parsed"] == by_id(first)[key]["parsed"] and row["parsed"]
               for key, row in reused.items())
