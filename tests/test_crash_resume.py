"""Real ``batchrun run`` processes killed with SIGKILL and resumed, against the emulator.

The emulator bills when an answer starts and counts bills per sha256 of the raw request body,
which is the ``request_sha256`` the journal records: so after every kill we know exactly which
rows were paid for in that session but never reached the journal ("lost" by that kill).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from support.kit import write_manifest

from batchrun.emulator.server import EmulatorServer

pytestmark = pytest.mark.slow  # kills real processes mid-run, again and again

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-crash-test-0123456789"


def run_args(manifest: Path, out: Path, server: EmulatorServer, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
            "--endpoint", server.base_url, "--concurrency", str(concurrency), "--quiet", "--yes"]


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, "BATCHRUN_API_KEY": KEY},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def journaled_ok_shas(journal: Path) -> set[str]:
    shas = set()
    for raw in journal.read_bytes().splitlines():
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # the half line a kill can leave
        if record.get("status") == "ok":
            shas.add(record["request_sha256"])
    return shas


def test_ten_sigkills_lose_no_answer_and_pay_twice_only_for_rows_in_flight(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    rows, concurrency, kills = 5000, 16, 10
    server = make_emulator(latency_ms=20, jitter_ms=60, seed=seed % 1000)
    manifest = write_manifest(tmp_path / "m.jsonl", rows, prompt="Question {number}?")
    out = tmp_path / "run"
    args = run_args(manifest, out, server, concurrency)
    lost_by_kill: list[set[str]] = []
    billed_before: Counter[str] = Counter()
    in_flight_at_kill: list[int] = []
    for kill in range(kills):
        process = start(args)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.05, 0.6))  # at start-up: imports, index, preflight
        else:
            billed_at_start = server.stats.billed_requests
            wait_for(lambda p=process, b=billed_at_start: server.stats.billed_requests > b
                     or p.poll() is not None)
            time.sleep(rng.uniform(0.0, 0.8))
        in_flight_at_kill.append(server.stats.in_flight)
        process.kill()
        process.wait()
        assert process.returncode == -9, f"seed {seed}, kill {kill}: the run ended by itself"
        wait_for(lambda: server.stats.in_flight == 0)  # answers of the dead process billed
        billed_now = Counter(dict(server.stats.billed_by_body))
        journaled = journaled_ok_shas(out / "journal.jsonl") if out.exists() else set()
        lost = {sha for sha, count in (billed_now - billed_before).items()
                if count and sha not in journaled}
        assert len(lost) <= concurrency, f"seed {seed}, kill {kill}: {len(lost)} lost"
        lost_by_kill.append(lost)
        billed_before = billed_now

    # The last resume may go faster: no kill to bound.
    final = subprocess.run(run_args(manifest, out, server, 64), cwd=REPO,
                           env={**os.environ, "BATCHRUN_API_KEY": KEY},
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    table = pq.read_table(out / "results.parquet")
    ids = table.column("id").to_pylist()
    assert len(ids) == rows and set(ids) == {f"row-{n}" for n in range(rows)}, f"seed {seed}"
    assert set(table.column("status").to_pylist()) == {"ok"}
    billed = server.stats.billed_by_body
    # Every answer in the results was billed, and each row at most once more per kill that
    # caught it billed but not yet journaled.
    assert set(table.column("request_sha256").to_pylist()) == set(billed)
    for sha, count in billed.items():
        kills_in_flight = sum(sha in lost for lost in lost_by_kill)
        assert count <= 1 + kills_in_flight, f"seed {seed}: {sha} billed {count} times"
    paid_twice = sum(count - 1 for count in billed.values())
    print("seed", seed, "lost by each kill", [len(lost) for lost in lost_by_kill],
          "in flight at each kill", in_flight_at_kill, "paid twice", paid_twice)
    assert paid_twice <= kills * concurrency
    assert paid_twice == sum(len(lost) for lost in lost_by_kill)
    # The kills were not all idle ones: most landed with requests in flight.
    assert sum(1 for n in in_flight_at_kill if n) >= kills // 2, (seed, in_flight_at_kill)


def test_a_second_process_is_refused_and_a_killed_ones_lock_is_taken_over(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=150)
    manifest = write_manifest(tmp_path / "m.jsonl", 300, prompt="Question {number}?")
    out = tmp_path / "run"
    first = start(run_args(manifest, out, server, 4))
    try:
        wait_for(lambda: server.stats.billed_requests > 0)
        second = subprocess.run(run_args(manifest, out, server, 4), cwd=REPO,
                                env={**os.environ, "BATCHRUN_API_KEY": KEY},
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by pid {first.pid}" in second.stderr
        status = subprocess.run([sys.executable, "-m", "batchrun.cli", "status", str(out),
                                 "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["running"] is True
    finally:
        first.kill()
        first.wait()
    taken_over = subprocess.run(run_args(manifest, out, server, 32), cwd=REPO,
                                env={**os.environ, "BATCHRUN_API_KEY": KEY},
                                capture_output=True, text=True, timeout=120)
    assert taken_over.returncode == 0, taken_over.stderr
    assert pq.read_table(out / "results.parquet").num_rows == 300
    assert max(server.stats.billed_by_body.values()) <= 2
