"""A manifest of which no row can be sent (``text`` where ``prompt`` was meant): ``estimate``
shows its table and exits 2, ``run`` refuses before sending anything (exit 2, not the circuit
breaker's 3); both name the columns found and the fix, ``prompt_template = "{text}"``."""

from __future__ import annotations

import json
from pathlib import Path

from support.kit import by_id, fast_job, run_cli

from batchrun.emulator.server import EmulatorServer

FIX = 'prompt_template = "{text}"'


def text_manifest(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc-{n}", "text": f"Document {n}."}) + "\n"
                            for n in range(rows)))
    return path


def test_estimate_shows_the_table_then_exits_2_with_the_fix(tmp_path: Path) -> None:
    manifest = text_manifest(tmp_path / "docs.jsonl", 30)
    result = run_cli(["estimate", str(manifest)])
    assert result.exit_code == 2, result.output
    assert "rows to send 0 of 30 · unsendable 30" in result.stdout
    # One line for the rows that fail alike, not the same reason ten times.
    unsendable = [line for line in result.stdout.splitlines() if "unsendable ×" in line]
    assert len(unsendable) == 1 and "×30 (line 1, line 2, line 3, …): no content" in unsendable[0]
    assert "columns found: id, text" in result.stderr
    assert FIX in result.stderr and "jobs/summarise.toml" in result.stderr

    as_json = run_cli(["estimate", str(manifest), "--json"])
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout)["rows_unsendable"] == 30
    assert FIX in as_json.stderr


def test_a_template_reading_a_missing_column_names_the_columns_found(tmp_path: Path) -> None:
    manifest = text_manifest(tmp_path / "docs.jsonl", 3)
    job = fast_job(tmp_path, prompt_template="Summarise: {body}")
    result = run_cli(["estimate", str(manifest), "--job", str(job)])
    assert result.exit_code == 2, result.output
    assert "reads columns this manifest does not have; columns found: id, text" in result.stderr


def test_run_refuses_before_sending_anything(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = text_manifest(tmp_path / "docs.jsonl", 30)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url])
    assert result.exit_code == 2, result.output  # was 3, from the circuit breaker
    assert "no row of" in result.output and FIX in result.output
    assert emulator.stats.requests_total == 0 and not out.exists()

    fixed = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                     "--job", str(fast_job(tmp_path, prompt_template="{text}"))])
    assert fixed.exit_code == 0, fixed.output
    assert {row["status"] for row in by_id(out).values()} == {"ok"}
