"""The resume command printed after a run started with ``--api-key`` works as printed once
the hint printed with it is followed (``BATCHRUN_API_KEY``); the key itself is never printed."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from support.kit import KEY, by_id, fast_job, run_process, write_manifest

from batchrun.emulator.server import EmulatorServer


def test_the_printed_resume_command_works_with_the_key_in_the_environment(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(revoke_after=3)  # a 401 after three requests: the run stops
    manifest = write_manifest(tmp_path / "m.jsonl", 12)
    job = fast_job(tmp_path, concurrency=1)
    out = tmp_path / "run"
    stopped = run_process(["run", str(manifest), "--job", str(job), "--out", str(out),
                           "--endpoint", server.base_url, "--api-key", KEY], key=None)
    assert stopped.returncode == 3, stopped.stderr
    assert KEY not in stopped.stderr + stopped.stdout
    command = re.search(r"^  (batchrun run .+)$", stopped.stderr, flags=re.MULTILINE)
    assert command is not None, stopped.stderr
    assert "export BATCHRUN_API_KEY=<your key>" in stopped.stderr

    server.config.revoke_after = None  # the key works again
    args = shlex.split(command.group(1))[1:]
    as_printed = run_process(args, key=None)
    assert as_printed.returncode == 2 and "no API key" in as_printed.stderr
    resumed = run_process(args, key=KEY)  # with the hint followed
    assert resumed.returncode == 0, resumed.stderr
    assert {row["status"] for row in by_id(out).values()} == {"ok"}


def test_the_printed_resume_command_names_what_the_environment_and_the_threshold_gave(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The endpoint came from BATCHRUN_ENDPOINT, and the run was let start above the default
    # --confirm-above (~2,900 credits expected): pasted in a shell that has neither, with no
    # one to ask, the command still resumes the run.
    monkeypatch.delenv("BATCHRUN_ENDPOINT", raising=False)
    server = make_emulator(revoke_after=3)
    manifest = write_manifest(tmp_path / "m.jsonl", 50)
    job = fast_job(tmp_path, concurrency=1, expected_output_tokens=60_000)
    out = tmp_path / "run"
    stopped = run_process(["run", str(manifest), "--job", str(job), "--out", str(out),
                           "--confirm-above", "5000"],
                          env={"BATCHRUN_ENDPOINT": server.base_url})
    assert stopped.returncode == 3, stopped.stderr
    command = re.search(r"^  (batchrun run .+)$", stopped.stderr, flags=re.MULTILINE)
    assert command is not None, stopped.stderr
    args = shlex.split(command.group(1))[1:]
    assert args[args.index("--endpoint") + 1] == server.base_url
    assert args[args.index("--confirm-above") + 1] == "5000"

    server.config.revoke_after = None
    resumed = run_process(args)
    assert resumed.returncode == 0, resumed.stderr
    assert {row["status"] for row in by_id(out).values()} == {"ok"}
    assert len(by_id(out)) == 50
