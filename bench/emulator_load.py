"""Is the emulator the bottleneck? Its CPU share while a client keeps N requests in flight.

    python bench/emulator_load.py [--latency-ms 200] [--concurrency 512] [--rows 30720]

Runs the bare aiohttp baseline, then batchrun, against one emulator (core 0) and prints each
client's rate next to the emulator's CPU seconds per wall second of that client's dispatch.
An emulator near 1.0 is saturated: no client can then reach the ideal rate.
"""

from __future__ import annotations

import argparse

from harness import (
    baseline_client,
    batchrun_client,
    emulator,
    ideal_rate,
    machine_note,
    table,
    workdir,
    write_job,
    write_manifest,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--rows", type=int, default=30720)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    print(machine_note())
    ideal = ideal_rate(args.concurrency, args.latency_ms / 1000.0)
    rows = [["client", "req/s", "of ideal", "emulator CPU-s per s", "client CPU-s per s"]]
    with workdir() as work, emulator("--latency-ms", f"{args.latency_ms:g}") as emu:
        manifest = write_manifest(work / "m.jsonl", args.rows)
        job = write_job(work / "job.toml", stream=args.stream, concurrency=args.concurrency)
        for name in ("aiohttp", "batchrun"):
            before = emu.cpu_s()
            if name == "aiohttp":
                figures = baseline_client(manifest, job, emu.base_url)
            else:
                figures = batchrun_client(manifest, job, work / "out", emu.base_url)
            # The emulator works only while requests come: its CPU over the dispatch time.
            busy = (emu.cpu_s() - before) / figures.elapsed_s
            rows.append([name, f"{figures.rate:,.0f}", f"{figures.rate / ideal:.3f}",
                         f"{busy:.2f}", f"{figures.cpu_s / figures.extra['wall_s']:.2f}"])
            emu.reset()
    print(table(rows))
    print(machine_note())


if __name__ == "__main__":
    main()
