"""One batchrun run as a bench client: ``batchrun run`` in this process, figures on stdout.

    python bench/client_batchrun.py MANIFEST JOB OUT ENDPOINT [extra run flags...]

CPU is this process's user + system time from just before ``batchrun run`` starts (imports
done) to its end: the estimate pass, the run, the journal and results.parquet all count;
``dispatch_cpu_s`` is the part spent between the first send and the last answer
(``cpu_window``), the window the rates are measured over.
The last stdout line is a JSON object (requests, ok, elapsed_s, cpu_s, ...).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpu_window import CpuSampler  # noqa: E402  (bench/ is the script's own folder)
from steady import steady_rate  # noqa: E402

from batchrun.cli import cli  # noqa: E402
from batchrun.dispatch import eventloop  # noqa: E402  (after the path fix, as a script)


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _ablate() -> None:
    """What ``bench/throughput.py --client-loop/--client-gc`` asks of this client only (the
    emulator keeps its own loop): asyncio's loop, or CPython's default collector."""
    loop = os.environ.get("BENCH_CLIENT_LOOP")
    if loop:
        os.environ[eventloop.LOOP_ENV] = loop
    if os.environ.get("BENCH_CLIENT_GC") == "default":
        eventloop.lean_collector = contextlib.nullcontext  # type: ignore[assignment]


def main() -> None:
    _ablate()
    manifest, job, out, endpoint, *extra = sys.argv[1:]
    argv = ["run", manifest, "--job", job, "--out", out, "--endpoint", endpoint,
            "--api-key", "sk-bench-key-0000", "--yes", "--quiet", *extra]
    cpu_before = _cpu()
    wall_before = time.perf_counter()
    with CpuSampler() as sampler:
        try:
            cli.main(argv, prog_name="batchrun", standalone_mode=False)
            exit_code = 0
        except SystemExit as stop:
            exit_code = int(stop.code or 0)
    wall_s = time.perf_counter() - wall_before
    cpu_s = _cpu() - cpu_before
    # Streamed, constant memory: the peak RSS is the run's, not this summary's.
    first_sent = float("inf")
    last_done = 0.0
    requests = ok = 0
    finished: list[float] = []
    with open(Path(out) / "journal.jsonl", "rb") as journal:
        for line in journal:
            record = orjson.loads(line)
            requests += record.get("attempts") or 0
            ok += record.get("status") == "ok"
            first_sent = min(first_sent, record["started_at"])
            last_done = max(last_done, record["finished_at"])
            finished.append(record["finished_at"])
    sys.stdout.write("\n" + orjson.dumps({
        "requests": requests, "ok": ok, "elapsed_s": last_done - first_sent,
        "cpu_s": cpu_s, "wall_s": wall_s, "exit_code": exit_code,
        "dispatch_cpu_s": (sampler.cpu_between(first_sent, last_done)
                           if first_sent <= last_done else None),  # None: nothing was sent
        "steady_rate": steady_rate(finished, first_sent),
    }).decode() + "\n")


if __name__ == "__main__":
    main()
