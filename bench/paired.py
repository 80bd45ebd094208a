"""Two builds of batchrun, alternating runs against one emulator: a fair before/after.

    git worktree add /tmp/old 2aab440
    python bench/paired.py /tmp/old . [--latency-ms 200] [--concurrency 512] [--rows 30720]

This VM's host lends its cores at varying speed (see RESULTS.md), so a figure measured an hour
ago is no baseline. Each round runs the old build, then the new one, on the same emulator
(core 0; the client on core 1) and the same manifest; each checkout's own
``bench/client_batchrun.py`` runs its own ``batchrun``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import (
    emulator,
    ideal_rate,
    machine_note,
    run_client,
    table,
    workdir,
    write_job,
    write_manifest,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the build before")
    parser.add_argument("new", type=Path, help="checkout of the build after")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--rows", type=int, default=30720)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    ideal = ideal_rate(args.concurrency, args.latency_ms / 1000.0)
    print(machine_note())
    rows = [["round", "build", "req/s", "of ideal", "CPU-s/1k"]]
    with workdir() as work, emulator("--latency-ms", f"{args.latency_ms:g}") as emu:
        manifest = write_manifest(work / "m.jsonl", args.rows)
        job = write_job(work / "job.toml", stream=args.stream, concurrency=args.concurrency)
        for round_number in range(1, args.repeat + 1):
            for name, checkout in (("old", args.old), ("new", args.new)):
                script = checkout.resolve() / "bench" / "client_batchrun.py"
                out = work / f"out-{name}-{round_number}"
                figures = run_client([str(script), str(manifest), str(job), str(out),
                                      emu.base_url])
                emu.reset()
                of_ideal = f"{figures.rate / ideal:.3f}" if ideal != float("inf") else "-"
                rows.append([str(round_number), name, f"{figures.rate:,.0f}", of_ideal,
                             f"{figures.cpu_per_1000:.3f}"])
                print(table(rows), flush=True)
    print(machine_note())


if __name__ == "__main__":
    main()
