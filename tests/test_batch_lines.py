"""OpenAI Batch input lines: the job's model is the one sent, whatever model each line's body
names (a batch file written for another API names that API's model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support.kit import by_id, fast_job, run_cli

from batchrun.emulator.server import EmulatorServer


def batch_lines(path: Path, rows: int, model: str) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(rows):
            handle.write(json.dumps({
                "custom_id": f"req-{number}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [
                    {"role": "user", "content": f"Question {number}: why is the sky blue?"}]},
            }) + "\n")
    return path


def test_the_default_model_wins_over_the_lines_model(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = batch_lines(tmp_path / "batch.jsonl", 4, model="gpt-4o-mini")
    job = fast_job(tmp_path)
    estimate = run_cli(["estimate", str(manifest), "--job", str(job)])
    assert estimate.exit_code == 0 and "(gemini-3.1-pro)" in estimate.output
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", emulator.base_url])
    assert result.exit_code == 0, result.output  # was: 404 model_not_found, exit 3
    assert dict(emulator.stats.models_requested) == {"gemini-3.1-pro": 4}
    assert {row["status"] for row in by_id(out).values()} == {"ok"}


def test_the_jobs_model_is_what_the_api_receives(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(models=("gemini-3.1-pro", "gemini-3-flash"))
    manifest = batch_lines(tmp_path / "batch.jsonl", 3, model="gemini-3.1-pro")
    job = fast_job(tmp_path, model="gemini-3-flash",
                   price={"input": 50, "output": 300})  # not in the catalog: priced here
    estimate = run_cli(["estimate", str(manifest), "--job", str(job)])
    assert "(gemini-3-flash)" in estimate.output
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(tmp_path / "run"),
                      "--endpoint", server.base_url])
    assert result.exit_code == 0, result.output
    assert dict(server.stats.models_requested) == {"gemini-3-flash": 3}
