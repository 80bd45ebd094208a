"""Throughput against the ideal ``min(concurrency / latency, rpm / 60)`` and against bare aiohttp.

    python bench/throughput.py                 # the cells of the issue's "done when"
    python bench/throughput.py --full          # latency 0/200/2000 ms x concurrency 64-1024
    python bench/throughput.py --latency 200 --concurrency 512 --stream both --seconds 20
    python bench/throughput.py --repeat 3      # medians of 3 alternating runs per cell
    python bench/throughput.py --client-loop asyncio --client-gc default   # ablation

For every cell the emulator (core 0) gets a fresh start, then the baseline (bare aiohttp, same
request bytes, bodies built before its clock starts) and ``batchrun run`` (core 1) send the
same manifest one after the other. Rates are answers per second from the first send to the
last answer; "steady" rates leave out the first 2 s and the last 1 s (the pool filling up and
draining, ``bench/steady.py``), as the ideal is a steady-state figure. CPU is the client
process's own (start-up excluded) per 1,000 requests. At latency 0 there is no ideal but the
emulator's speed: the baseline is the yardstick there.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness import (
    CLIENT_CORE,
    ClientFigures,
    baseline_client,
    batchrun_client,
    emulator,
    host_speed_probe,
    ideal_rate,
    machine_note,
    table,
    workdir,
    write_job,
    write_manifest,
)

DONE_WHEN = [(200, 512), (0, 64)]
FULL_LATENCIES = (0, 200, 2000)
FULL_CONCURRENCY = (64, 256, 512, 1024)
LATENCY0_ROWS = 20_000


def rows_for(latency_ms: float, concurrency: int, seconds: float) -> int:
    """Enough rows for ``seconds`` at the ideal rate (a fixed count at latency 0)."""
    if latency_ms <= 0:
        return LATENCY0_ROWS
    return max(2 * concurrency, int(concurrency / (latency_ms / 1000.0) * seconds))


def measure(latency_ms: float, concurrency: int, stream: bool, seconds: float,
            work: Path, repeat: int = 1) -> list[str]:
    """Baseline then batchrun, ``repeat`` times alternately; the median run of each counts."""
    rows = rows_for(latency_ms, concurrency, seconds)
    tag = f"{latency_ms:g}-{concurrency}-{'s' if stream else 'j'}"
    manifest = write_manifest(work / f"m-{rows}.jsonl", rows)
    job = write_job(work / f"{tag}.toml", stream=stream, concurrency=concurrency)
    bases: list[ClientFigures] = []
    ours: list[ClientFigures] = []
    with emulator("--latency-ms", f"{latency_ms:g}") as emu:
        for attempt in range(repeat):
            bases.append(baseline_client(manifest, job, emu.base_url))
            emu.reset()
            probe = host_speed_probe(CLIENT_CORE)
            ours.append(batchrun_client(manifest, job, work / f"out-{tag}-{attempt}",
                                        emu.base_url))
            emu.reset()
            _print_run(attempt, latency_ms, concurrency, stream, probe, bases[-1], ours[-1])
    ideal = ideal_rate(concurrency, latency_ms / 1000.0)
    return _row(latency_ms, concurrency, stream, rows, ideal, _median(bases), _median(ours))


def _print_run(attempt: int, latency_ms: float, concurrency: int, stream: bool, probe: float,
               base: ClientFigures, ours: ClientFigures) -> None:
    """Each run as it ends, with the host's speed just before it (a lower probe is faster)."""
    ideal = ideal_rate(concurrency, latency_ms / 1000.0)
    finite = ideal != float("inf")
    print(f"  run {attempt + 1} ({latency_ms:g} ms x {concurrency}, stream={stream}): "
          f"host probe {probe:.3f} s; batchrun {ours.rate:,.0f} req/s"
          + (f" = {ours.rate / ideal:.3f} of ideal (steady {_of_ideal(ours.steady_rate, ideal)})"
             if finite else "")
          + f", {ours.cpu_per_1000:.3f} CPU-s/1k; aiohttp {base.rate:,.0f} req/s"
          + (f" (steady {_of_ideal(base.steady_rate, ideal)})" if finite else ""), flush=True)


def _median(runs: list[ClientFigures]) -> ClientFigures:
    """The run of median rate, with the median CPU of all runs (they vary independently)."""
    by_rate = sorted(runs, key=lambda run: run.rate)
    middle = by_rate[len(by_rate) // 2]
    cpu = sorted(run.cpu_per_1000 for run in runs)[len(runs) // 2]
    steadies = sorted(run.steady_rate for run in runs if run.steady_rate is not None)
    steady = steadies[len(steadies) // 2] if steadies else None
    return ClientFigures(requests=middle.requests, ok=middle.ok, elapsed_s=middle.elapsed_s,
                         cpu_s=cpu * middle.requests / 1000.0, max_rss_mb=middle.max_rss_mb,
                         extra={**middle.extra, "steady_rate": steady})


def _of_ideal(rate: float | None, ideal: float) -> str:
    return f"{rate / ideal:.3f}" if rate is not None and ideal != float("inf") else "-"


def _row(latency_ms: float, concurrency: int, stream: bool, rows: int, ideal: float,
         base: ClientFigures, ours: ClientFigures) -> list[str]:
    finite = ideal != float("inf")
    return [
        f"{latency_ms:g}",
        str(concurrency),
        "yes" if stream else "no",
        f"{rows:,}",
        f"{ideal:,.0f}" if finite else "-",
        f"{base.rate:,.0f}",
        f"{ours.rate:,.0f}",
        f"{ours.rate / ideal:.3f}" if finite else "-",
        _of_ideal(ours.steady_rate, ideal),
        _of_ideal(base.steady_rate, ideal),
        f"{ours.rate / base.rate:.3f}",
        f"{base.cpu_per_1000:.3f}",
        f"{ours.cpu_per_1000:.3f}",
        f"{ours.max_rss_mb:.0f}",
        "ok" if ours.ok == rows else f"{ours.ok:,} ok",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the whole matrix")
    parser.add_argument("--latency", type=float, action="append",
                        help="emulator latency in ms (repeatable)")
    parser.add_argument("--concurrency", type=int, action="append", help="(repeatable)")
    parser.add_argument("--stream", choices=("no", "yes", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of a run at the ideal rate (latency > 0)")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 10,000 rows at latency 0")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each client per cell; the medians are shown")
    parser.add_argument("--client-loop", choices=("uvloop", "asyncio"),
                        help="batchrun's event loop (default: what batchrun picks, uvloop)")
    parser.add_argument("--client-gc", choices=("lean", "default"),
                        help="batchrun's collector during dispatch (default: lean)")
    args = parser.parse_args()
    # Read by bench/client_batchrun.py only: the emulator and the baseline are not affected.
    if args.client_loop:
        os.environ["BENCH_CLIENT_LOOP"] = args.client_loop
    if args.client_gc:
        os.environ["BENCH_CLIENT_GC"] = args.client_gc
    global LATENCY0_ROWS
    if args.quick:
        args.seconds = 5.0
        LATENCY0_ROWS = 10_000
    if args.latency or args.concurrency:
        cells = [(lat, conc) for lat in (args.latency or [200.0])
                 for conc in (args.concurrency or [512])]
    elif args.full:
        cells = [(lat, conc) for lat in FULL_LATENCIES for conc in FULL_CONCURRENCY]
    else:
        cells = DONE_WHEN
    streams = {"no": [False], "yes": [True], "both": [False, True]}[args.stream]
    print(machine_note())
    header = ["latency ms", "concurrency", "stream", "rows", "ideal req/s", "aiohttp req/s",
              "batchrun req/s", "batchrun / ideal", "batchrun steady / ideal",
              "aiohttp steady / ideal", "batchrun / aiohttp",
              "aiohttp CPU-s/1k", "batchrun CPU-s/1k", "batchrun RSS MB", "rows ok"]
    rows = [header]
    with workdir() as work:
        for latency_ms, concurrency in cells:
            for stream in streams:
                rows.append(measure(latency_ms, concurrency, stream, args.seconds, work,
                                    args.repeat))
                print(table(rows), flush=True)
    print(machine_note())


if __name__ == "__main__":
    main()
