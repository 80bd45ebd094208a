"""The shipped job specs work, and every name of the CLI contract is documented twice:
in the README and in the command's --help."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import load_job

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.toml"))

# The CLI contract (README's Commands section): command → its options.
CONTRACT: dict[str, list[str]] = {
    "estimate": ["--job", "--json", "--media-root", "--calibrate", "--endpoint", "--api-key",
                 "--yes", "--allow-job-change"],
    "run": ["--out", "--job", "--endpoint", "--api-key", "--concurrency", "--rpm", "--tpm",
            "--max-credits", "--yes", "--emulate", "--retry-failed", "--calibrate",
            "--confirm-above", "--media-root", "--media-budget", "--reuse", "--quiet", "--json",
            "--redo"],
    "status": ["--json"],
    "export": ["--output", "--with-input", "--flatten"],
    "report": ["--output"],
    "emulator": ["--port", "--latency-ms", "--rpm", "--fail-503", "--fail-500", "--balance",
                 "--spend-limit", "--drop-rate", "--length-rate", "--length-match",
                 "--bad-json-rate", "--strict-stream-usage"],
}


@pytest.mark.parametrize("job_file", JOBS, ids=[job.stem for job in JOBS])
def test_every_shipped_job_loads(job_file: Path) -> None:
    spec = load_job(job_file)
    spec.validate()
    assert spec.model == "gemini-3.1-pro"


@pytest.mark.parametrize("command", sorted(CONTRACT))
def test_contract_commands_and_options_are_in_help_and_readme(command: str) -> None:
    readme = (ROOT / "README.md").read_text()
    help_text = CliRunner().invoke(cli, [command, "--help"]).output
    assert f"batchrun {command}" in readme
    for option in CONTRACT[command]:
        assert option in help_text, f"{command} --help lacks {option}"
        assert option in readme, f"README lacks {option} (of {command})"
    assert "Example" in help_text


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, env={"BATCHRUN_API_KEY": "sk-jobs-test"})
    assert result.exit_code == 0, result.output


def test_summarise_job_renders_its_template(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "docs.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"d{n}", "text": f"Document {n} " * 40}) + "\n"
                                for n in range(5)))
    out = tmp_path / "run"
    _run(["run", str(manifest), "--job", str(ROOT / "jobs/summarise.toml"), "--out", str(out),
          "--endpoint", emulator.base_url, "--quiet"])
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 5 and all(row["status"] == "ok" for row in rows)


def test_grounded_job_keeps_citations_in_extra(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "q.jsonl"
    manifest.write_text('{"id": "q1", "prompt": "Tomorrow weather forecast for Shanghai"}\n')
    out = tmp_path / "run"
    _run(["run", str(manifest), "--job", str(ROOT / "jobs/grounded_answers.toml"), "--out",
          str(out), "--endpoint", emulator.base_url, "--quiet"])
    row = pq.read_table(out / "results.parquet").to_pylist()[0]
    assert row["status"] == "ok"
    assert "url_citation" in (row["extra"] or "")


def test_extract_fields_job_sends_the_pdf_column(tmp_path: Path, emulator: EmulatorServer) -> None:
    shutil.copyfile(ROOT / "sample_inputs/media/report.pdf", tmp_path / "invoice.pdf")
    manifest = tmp_path / "invoices.jsonl"
    manifest.write_text('{"id": "inv-1", "pdf": "invoice.pdf"}\n')
    out = tmp_path / "run"
    _run(["run", str(manifest), "--job", str(ROOT / "jobs/extract_fields_pdf.toml"), "--out",
          str(out), "--endpoint", emulator.base_url, "--quiet"])
    assert pq.read_table(out / "results.parquet").to_pylist()[0]["status"] == "ok"
    assert [mime for mime, _ in emulator.stats.media_seen] == ["application/pdf"]
