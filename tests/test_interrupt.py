"""Ctrl-C on a real ``batchrun run`` process: in-flight rows finish, exit 130, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from batchrun.emulator.server import EmulatorServer


def test_sigint_stops_dispatch_keeps_answers_and_prints_resume(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=300)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{n}", "prompt": f"q{n}"}) + "\n"
                                for n in range(400)))
    out = tmp_path / "run"
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-interrupt-test"}
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
         "--endpoint", server.base_url, "--concurrency", "8"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while server.stats.billed_requests < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupt" in stderr and f"--out {out}" in stderr
    # Said as the signal came, on a line of its own (off the progress line).
    assert ("\ninterrupt: no new requests; waiting for the ones in flight (Ctrl-C again to "
            "abandon them)\n") in stderr
    assert stderr.index("interrupt: no new requests") < stderr.index("done: ")
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert 16 <= len(rows) < 400
    assert all(row["status"] == "ok" for row in rows)
    # Every answer the emulator billed is in the results (in-flight requests were awaited).
    assert len(rows) == server.stats.billed_requests

    resumed = subprocess.run(
        [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
         "--endpoint", server.base_url, "--concurrency", "32", "--quiet"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out / "results.parquet").num_rows == 400
    assert max(server.stats.billed_by_body.values()) == 1
