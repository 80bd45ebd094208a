"""Peak RSS of ``batchrun run`` against the manifest size: 10k, 100k and 1M text rows.

    python bench/memory.py [--rows 10000 --rows 100000 --rows 1000000] [--quick]

The emulator answers at once (latency 0) on core 0; batchrun runs on core 1 with concurrency
256, non-streaming. Peak RSS is the kernel's (``ru_maxrss`` of the finished process), so it
covers everything: imports, the estimate pass, the run, the journal, results.parquet. The
interpreter with batchrun's imports alone is printed as the floor. ``--quick``: 10k and 100k.
"""

from __future__ import annotations

import argparse

from harness import (
    BENCH,
    batchrun_client,
    emulator,
    machine_note,
    run_client,
    table,
    workdir,
    write_job,
    write_manifest,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = args.rows or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    print(machine_note())
    floor = run_client([str(BENCH / "client_imports.py")])
    rows = [["manifest rows", "peak RSS MB", "over imports MB", "bytes / row over 10k run",
             "req/s", "CPU-s / 1k", "rows ok"]]
    first: tuple[int, float] | None = None
    with workdir() as work, emulator("--latency-ms", "0") as emu:
        for size in sizes:
            manifest = write_manifest(work / f"m{size}.jsonl", size)
            job = write_job(work / "job.toml", stream=False, concurrency=256)
            figures = batchrun_client(manifest, job, work / f"out{size}", emu.base_url)
            if first is None:
                first = (size, figures.max_rss_mb)
            growth = ((figures.max_rss_mb - first[1]) * 1024 * 1024 / (size - first[0])
                      if size > first[0] else float("nan"))
            rows.append([f"{size:,}", f"{figures.max_rss_mb:.0f}",
                         f"{figures.max_rss_mb - floor.max_rss_mb:.0f}",
                         "-" if growth != growth else f"{growth:.0f}",
                         f"{figures.rate:,.0f}", f"{figures.cpu_per_1000:.3f}",
                         f"{figures.ok:,}"])
            print(table(rows), flush=True)
            emu.reset()  # the emulator keeps per-body counters; start each size afresh
    print(f"imports alone: {floor.max_rss_mb:.0f} MB")
    print(machine_note())


if __name__ == "__main__":
    main()
