"""``estimate``'s table on stdout (``> file`` keeps it), talk on stderr."""

from __future__ import annotations

from pathlib import Path

from support.kit import run_process, write_manifest


def test_the_estimate_table_goes_to_stdout(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    done = run_process(["estimate", str(manifest)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"estimate for {manifest} (gemini-3.1-pro):")
    assert "rows to send 3 of 3" in done.stdout and "credits ≈" in done.stdout
    assert "rows to send" not in done.stderr
