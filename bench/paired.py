"""Two builds of batchrun against one emulator: a fair before/after.

    git worktree add /tmp/old 2aab440
    python bench/paired.py /tmp/old . [--latency-ms 200] [--concurrency 512] [--rows 30720]
    python bench/paired.py /tmp/old . --stream --thoughts --parts 4 --together --repeat 4

This VM's host lends its cores at varying speed (see RESULTS.md), so a figure measured an hour
ago is no baseline. Each round runs the old build, then the new one, on the same emulator
(core 0; the client on core 1) and the same manifest; each checkout's own
``bench/client_batchrun.py`` runs its own ``batchrun``.

``--together`` runs both builds at the same time, both on core 1, on the same manifest (each
with its own output): whatever the host does to the core's speed meanwhile, it does to both.
Their rates then say nothing (they share the core), but the CPU each spends a request between
its first send and its last answer ("window") compares like with like: the round's ratio new /
old moved by ~1-2% between rounds where alternating runs moved by ~10% (RESULTS.md, issue 13's
seventh pass). Use it to tell whether a change of a few percent of a request's CPU is real.
"""

from __future__ import annotations

import argparse
import statistics
import threading
from collections.abc import Callable
from pathlib import Path

from harness import (
    ClientFigures,
    emulator,
    ideal_rate,
    machine_note,
    run_client,
    table,
    workdir,
    write_job,
    write_manifest,
)


def together(run: Callable[[str, Path, int], ClientFigures],
             builds: tuple[tuple[str, Path], ...], round_number: int) -> dict[str, ClientFigures]:
    """Each build's run at the same time (a thread each waits for its client process)."""
    figures: dict[str, ClientFigures] = {}

    def one(name: str, checkout: Path) -> None:
        figures[name] = run(name, checkout, round_number)

    threads = [threading.Thread(target=one, args=build) for build in builds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = [name for name, _ in builds if name not in figures]
    if missing:
        raise RuntimeError(f"the run of {', '.join(missing)} failed (its error is above)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the build before")
    parser.add_argument("new", type=Path, help="checkout of the build after")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--rows", type=int, default=30720)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--thoughts", action="store_true",
                        help="ask for thoughts, effort left to the API (the users' default)")
    parser.add_argument("--parts", type=int, default=0,
                        help="the emulator sends each stream in this many parts")
    parser.add_argument("--together", action="store_true",
                        help="run both builds at the same time on the client core")
    args = parser.parse_args()
    ideal = ideal_rate(args.concurrency, args.latency_ms / 1000.0)
    print(machine_note())
    rows = [["round", "build", "req/s", "of ideal", "CPU-s/1k", "window CPU-s/1k",
             "window new / old"]]
    ratios: list[float] = []
    emulator_args = ["--latency-ms", f"{args.latency_ms:g}"]
    if args.parts:
        emulator_args += ["--stream-parts", str(args.parts)]
    builds = (("old", args.old), ("new", args.new))
    with workdir() as work, emulator(*emulator_args) as emu:
        manifest = write_manifest(work / "m.jsonl", args.rows)
        job = write_job(work / "job.toml", stream=args.stream, concurrency=args.concurrency,
                        include_thoughts=args.thoughts,
                        reasoning_effort=None if args.thoughts else "low")

        def run(name: str, checkout: Path, round_number: int) -> ClientFigures:
            script = checkout.resolve() / "bench" / "client_batchrun.py"
            out = work / f"out-{name}-{round_number}"
            return run_client([str(script), str(manifest), str(job), str(out), emu.base_url])

        for round_number in range(1, args.repeat + 1):
            figures: dict[str, ClientFigures] = {}
            # Who starts first alternates, in both modes.
            order = builds if round_number % 2 else builds[::-1]
            if args.together:
                figures = together(run, order, round_number)
            else:
                for name, checkout in order:
                    figures[name] = run(name, checkout, round_number)
            emu.reset()
            old_window = figures["old"].dispatch_cpu_per_1000
            new_window = figures["new"].dispatch_cpu_per_1000
            ratio = new_window / old_window if old_window and new_window else None
            if ratio is not None:
                ratios.append(ratio)
            for name, _ in builds:
                figure = figures[name]
                of_ideal = f"{figure.rate / ideal:.3f}" if ideal != float("inf") else "-"
                window = figure.dispatch_cpu_per_1000
                rows.append([str(round_number), name, f"{figure.rate:,.0f}", of_ideal,
                             f"{figure.cpu_per_1000:.3f}",
                             f"{window:.3f}" if window is not None else "-",
                             f"{ratio:.3f}" if name == "new" and ratio is not None else ""])
            print(table(rows), flush=True)
    if ratios:
        print(f"window CPU a request, new / old: median {statistics.median(ratios):.3f} "
              f"({', '.join(f'{ratio:.3f}' for ratio in ratios)})"
              + (" (run together)" if args.together else " (run one after the other)"))
    print(machine_note())


if __name__ == "__main__":
    main()
