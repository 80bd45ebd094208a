"""``python -m batchrun`` is the ``batchrun`` command (finding 7 of issue 16: it had no
``__main__``), run as a real process the way a user without the console script would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from batchrun import __version__

ROOT = Path(__file__).resolve().parent.parent


def python_m(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_python_m_batchrun_is_the_command() -> None:
    version = python_m("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"batchrun, version {__version__}"
    usage = python_m("--help")
    assert usage.returncode == 0 and "Usage: python -m batchrun" in usage.stdout
    assert all(name in usage.stdout for name in ("run", "estimate", "status", "export", "report"))


def test_python_m_batchrun_runs_a_command_and_keeps_its_exit_codes() -> None:
    estimate = python_m("estimate", "sample_inputs/sample.jsonl", "--job", "jobs/sample.toml",
                        "--json")
    assert estimate.returncode == 0, estimate.stderr
    assert json.loads(estimate.stdout)["rows"] == 12
    missing = python_m("estimate", "no/such/manifest.jsonl")
    assert missing.returncode == 2
    assert "manifest not found: no/such/manifest.jsonl" in missing.stderr
