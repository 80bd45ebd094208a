"""Answers cut short (finish_reason other than stop): kept ok per row, counted by ``status
--json`` (``finish_reasons``) and the run's summary, and sent again — paid and counted — by
``run --redo incomplete``, while the other rows are not resent (the emulator's billing says)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support.kit import by_id, fast_job, run_cli, status_json, write_manifest

from batchrun.emulator.server import EmulatorServer


def test_cut_answers_are_counted_and_redone_by_the_documented_command(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(length_match="LONG")
    manifest = write_manifest(tmp_path / "rows.jsonl", 12,
                              prompt="Question {number}: tell me everything.")
    # Rows 0, 4 and 8 ask for something the emulator cuts short.
    lines = manifest.read_text().splitlines()
    for at in (0, 4, 8):
        lines[at] = lines[at].replace("everything", "everything LONG")
    manifest.write_text("\n".join(lines) + "\n")
    job = fast_job(tmp_path)
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url]

    first = run_cli(args)
    assert first.exit_code == 0, first.output  # cut answers are ok rows
    assert "incomplete answers (ok, but not finished with stop): length ×3" in first.output
    assert "--redo incomplete" in first.output
    rows = by_id(out)
    cut = {row_id for row_id, row in rows.items() if row["finish_reason"] == "length"}
    assert cut == {"row-0", "row-4", "row-8"}
    assert all(row["status"] == "ok" for row in rows.values())
    status = status_json(out)
    assert status["finish_reasons"] == {"stop": 9, "length": 3}
    assert status["rows_incomplete"] == 3 and status["rows_ok"] == 12
    assert status["redo_command"].endswith("--redo incomplete")
    human = run_cli(["status", str(out)]).output
    assert "length ×3" in human
    billed_once = dict(server.stats.billed_by_body)
    assert len(billed_once) == 12 and set(billed_once.values()) == {1}

    # A plain resume sends nothing: cut answers are done unless asked for.
    again = run_cli([*args, "--quiet"])
    assert again.exit_code == 0, again.output
    assert server.stats.billed_requests == 12

    server.config.length_match = None  # the model now finishes them
    redo = run_cli([*args, "--redo", "incomplete", "--quiet", "--json"])
    assert redo.exit_code == 0, redo.output
    assert json.loads(redo.stdout)["finish_reasons"] == {"stop": 12}
    billed = server.stats.billed_by_body
    assert sum(billed.values()) == 15 and sorted(billed.values()) == [1] * 9 + [2] * 3
    rows = by_id(out)
    assert all(rows[row_id]["finish_reason"] == "stop" for row_id in cut)
    status = status_json(out)
    assert status["finish_reasons"] == {"stop": 12} and status["rows_incomplete"] == 0
    # every attempt is paid and counted: the totals hold the 15 answers
    assert status["credits"] == round(server.stats.credits_billed, 8)


def test_a_share_of_cut_answers_is_counted_and_the_same_ones_are_cut_again(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(length_rate=0.25)
    manifest = write_manifest(tmp_path / "rows.jsonl", 120)
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(fast_job(tmp_path, concurrency=16)), "--out",
            str(out), "--endpoint", server.base_url, "--quiet"]
    assert run_cli(args).exit_code == 0
    cut = {row_id for row_id, row in by_id(out).items() if row["finish_reason"] == "length"}
    assert 10 <= len(cut) <= 50
    assert status_json(out)["finish_reasons"] == {"stop": 120 - len(cut), "length": len(cut)}
    redo = run_cli([*args, "--redo", "incomplete"])
    assert redo.exit_code == 0, redo.output
    assert server.stats.billed_requests == 120 + len(cut)
    assert {row_id for row_id, row in by_id(out).items()
            if row["finish_reason"] == "length"} == cut


def test_the_shipped_long_answers_job_redoes_only_cut_rows(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(length_rate=0.3)
    root = Path(__file__).resolve().parent.parent
    manifest = write_manifest(tmp_path / "essays.jsonl", 40, prompt="Essay {number} on tides")
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(root / "jobs/long_answers.toml"), "--out",
            str(out), "--endpoint", server.base_url, "--quiet"]
    assert run_cli(args).exit_code == 0
    incomplete = status_json(out)["rows_incomplete"]
    assert incomplete > 0
    server.config.length_rate = 0.0
    assert run_cli([*args, "--redo", "incomplete"]).exit_code == 0
    assert server.stats.billed_requests == 40 + incomplete
    assert status_json(out)["finish_reasons"] == {"stop": 40}
