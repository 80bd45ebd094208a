"""``estimate``'s table on stdout (``> file`` keeps it), talk on stderr; ``--reuse`` between
two ``--emulate`` runs (the embedded emulator's port changes every time, its answers do
not)."""

from __future__ import annotations

from pathlib import Path

from support.kit import by_id, fast_job, run_cli, run_process, write_manifest


def test_the_estimate_table_goes_to_stdout(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    done = run_process(["estimate", str(manifest)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"estimate for {manifest} (gemini-3.1-pro):")
    assert "rows to send 3 of 3" in done.stdout and "credits ≈" in done.stdout
    assert "rows to send" not in done.stderr


def test_reuse_between_two_emulated_runs_reuses_every_answer(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 6)
    job = fast_job(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    ran = run_cli(["run", str(manifest), "--job", str(job), "--out", str(first), "--emulate"])
    assert ran.exit_code == 0, ran.output
    again = run_cli(["run", str(manifest), "--job", str(job), "--out", str(second),
                     "--emulate", "--reuse", str(first)])
    assert again.exit_code == 0, again.output
    assert "reuse: 6 rows answered by" in again.output
    old, new = by_id(first), by_id(second)
    assert all(row["attempts"] == 0 for row in new.values())  # nothing sent, nothing paid
    assert {i: r["content"] for i, r in new.items()} == {i: r["content"] for i, r in old.items()}
    # And a resume of an emulated run is under the same endpoint, whatever the port.
    resumed = run_cli(["run", str(manifest), "--job", str(job), "--out", str(first), "--emulate"])
    assert resumed.exit_code == 0, resumed.output
