"""Throughput against the ideal ``min(concurrency / latency, rpm / 60)`` and against bare aiohttp.

    python bench/throughput.py                 # the cells of the issue's "done when"
    python bench/throughput.py --full          # latency 0/200/2000 ms x concurrency 64-1024
    python bench/throughput.py --latency 200 --concurrency 512 --stream both --seconds 20
    python bench/throughput.py --repeat 3      # medians of 3 alternating runs per cell
    python bench/throughput.py --client-loop asyncio --client-gc default   # ablation
    python bench/throughput.py --stream yes --thoughts on --effort default --parts 4
                                               # the users' default path
    python bench/throughput.py --old /tmp/base   # another checkout's batchrun in the same runs

For every cell the emulator (core 0) gets a fresh start, then the baseline (bare aiohttp, same
request bytes, bodies built before its clock starts) and ``batchrun run`` (core 1) send the
same manifest one after the other. Rates are answers per second from the first send to the
last answer; "steady" rates leave out the first 2 s and the last 1 s (the pool filling up and
draining, ``bench/steady.py``), as the ideal is a steady-state figure. CPU is the client
process's own (start-up excluded) per 1,000 requests; "window" CPU is the part of it spent
between the first send and the last answer (``bench/cpu_window.py``): batchrun's estimate pass
before and results.parquet after are left out, as the rates leave them out. In a cell where
the client's core is saturated, the rate ratio is about the inverse of the window CPU ratio.
At latency 0 there is no ideal but the
emulator's speed: the baseline is the yardstick there.

``--thoughts on`` asks for thoughts (the job's ``include_thoughts``; the emulator sends them as
``reasoning_content`` deltas, or as a leading ``<thought>`` block with ``--thoughts-style
tag``); ``--effort default`` leaves reasoning_effort to the API, as the users' jobs do;
``--parts N`` has the emulator send each stream in N parts spread over the latency
(``--stream-parts``). The baseline runs on the loop and collector batchrun uses (uvloop,
lean) unless ``--baseline-gc default``. ``--old PATH`` runs that checkout's
``bench/client_batchrun.py`` too, in every repeat, for a paired before/after against the same
emulator and baseline.
"""

from __future__ import annotations

import argparse
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from harness import (
    CLIENT_CORE,
    ClientFigures,
    Emulator,
    baseline_client,
    batchrun_client,
    emulator,
    host_speed_probe,
    ideal_rate,
    machine_note,
    run_client,
    table,
    workdir,
    write_job,
    write_manifest,
)

DONE_WHEN = [(200, 512), (0, 64)]
FULL_LATENCIES = (0, 200, 2000)
FULL_CONCURRENCY = (64, 256, 512, 1024)
LATENCY0_ROWS = 20_000
@dataclass(frozen=True)
class PathSpec:
    """What the answers look like: thoughts on or off, their style, stream parts."""

    thoughts: bool = False
    style: str = "field"
    parts: int = 0
    effort: str | None = "low"  # None: the API's default (high)

    def label(self) -> str:
        thoughts = f"on ({self.style}, {self.effort or 'default'})" if self.thoughts else "off"
        return f"{thoughts}, {self.parts or 1} part{'s' if self.parts > 1 else ''}"


def emulator_args(latency_ms: float, spec: PathSpec) -> list[str]:
    """The emulator's flags for ``latency_ms`` with streams in ``spec.parts`` parts."""
    args = ["--latency-ms", f"{latency_ms:g}"]
    return [*args, "--stream-parts", str(spec.parts)] if spec.parts > 1 else args


def configure(emu: Emulator, changes: dict[str, object]) -> None:
    request = urllib.request.Request(emu.root_url + "/_emulator/config",
                                     data=orjson.dumps(changes), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def rows_for(latency_ms: float, concurrency: int, seconds: float) -> int:
    """Enough rows for ``seconds`` at the ideal rate (a fixed count at latency 0)."""
    if latency_ms <= 0:
        return LATENCY0_ROWS
    return max(2 * concurrency, int(concurrency / (latency_ms / 1000.0) * seconds))


def measure(latency_ms: float, concurrency: int, stream: bool, seconds: float,
            work: Path, repeat: int = 1, spec: PathSpec = PathSpec(),
            old: Path | None = None) -> list[list[str]]:
    """Baseline then batchrun (then the old build), ``repeat`` times alternately; the median
    run of each counts. One table row per build."""
    rows = rows_for(latency_ms, concurrency, seconds)
    tag = f"{latency_ms:g}-{concurrency}-{'s' if stream else 'j'}"
    manifest = write_manifest(work / f"m-{rows}.jsonl", rows)
    job = write_job(work / f"{tag}.toml", stream=stream, concurrency=concurrency,
                    include_thoughts=spec.thoughts, reasoning_effort=spec.effort)
    bases: list[ClientFigures] = []
    builds: dict[str, list[ClientFigures]] = {"new": []} if old is None else {"old": [], "new": []}
    with emulator(*emulator_args(latency_ms, spec)) as emu:
        if spec.style != "field":
            configure(emu, {"thoughts_style": spec.style})
        for attempt in range(repeat):
            bases.append(baseline_client(manifest, job, emu.base_url))
            emu.reset()
            # Alternate which build goes first, so neither always follows the baseline.
            order = list(builds) if attempt % 2 == 0 else list(reversed(builds))
            for name in order:
                probe = host_speed_probe(CLIENT_CORE)
                out = work / f"out-{tag}-{name}-{attempt}"
                if name == "old":
                    assert old is not None
                    figures = run_client([str(old.resolve() / "bench" / "client_batchrun.py"),
                                          str(manifest), str(job), str(out), emu.base_url])
                else:
                    figures = batchrun_client(manifest, job, out, emu.base_url)
                emu.reset()
                builds[name].append(figures)
                _print_run(attempt, latency_ms, concurrency, stream, probe, bases[-1], figures,
                           name if old is not None else "batchrun")
    ideal = ideal_rate(concurrency, latency_ms / 1000.0)
    base = _median(bases)
    return [_row(latency_ms, concurrency, stream, rows, ideal, base, _median(runs),
                 name if old is not None else "batchrun", spec)
            for name, runs in builds.items()]


def _print_run(attempt: int, latency_ms: float, concurrency: int, stream: bool, probe: float,
               base: ClientFigures, ours: ClientFigures, name: str = "batchrun") -> None:
    """Each run as it ends, with the host's speed just before it (a lower probe is faster)."""
    ideal = ideal_rate(concurrency, latency_ms / 1000.0)
    finite = ideal != float("inf")
    print(f"  run {attempt + 1} ({latency_ms:g} ms x {concurrency}, stream={stream}): "
          f"host probe {probe:.3f} s; {name} {ours.rate:,.0f} req/s"
          + (f" = {ours.rate / ideal:.3f} of ideal (steady {_of_ideal(ours.steady_rate, ideal)})"
             if finite else "")
          + f", {ours.cpu_per_1000:.3f} CPU-s/1k; aiohttp {base.rate:,.0f} req/s"
          + (f" (steady {_of_ideal(base.steady_rate, ideal)})" if finite else "")
          + f", {base.cpu_per_1000:.3f} CPU-s/1k; ratios {ours.rate / base.rate:.3f} req/s, "
          f"{ours.cpu_per_1000 / base.cpu_per_1000:.2f}x CPU, "
          f"{_window_ratio(ours, base)}x CPU first send to last answer "
          f"({_window_cpu(ours)} vs {_window_cpu(base)})", flush=True)


def _median(runs: list[ClientFigures]) -> ClientFigures:
    """The run of median rate, with the median CPU of all runs (they vary independently)."""
    by_rate = sorted(runs, key=lambda run: run.rate)
    middle = by_rate[len(by_rate) // 2]
    cpu = sorted(run.cpu_per_1000 for run in runs)[len(runs) // 2]
    steadies = sorted(run.steady_rate for run in runs if run.steady_rate is not None)
    steady = steadies[len(steadies) // 2] if steadies else None
    windows = sorted(w for run in runs if (w := run.dispatch_cpu_per_1000) is not None)
    window = windows[len(windows) // 2] * middle.requests / 1000.0 if windows else None
    return ClientFigures(requests=middle.requests, ok=middle.ok, elapsed_s=middle.elapsed_s,
                         cpu_s=cpu * middle.requests / 1000.0, max_rss_mb=middle.max_rss_mb,
                         extra={**middle.extra, "steady_rate": steady,
                                "dispatch_cpu_s": window})


def _window_cpu(run: ClientFigures) -> str:
    value = run.dispatch_cpu_per_1000
    return f"{value:.3f}" if value is not None else "-"


def _window_ratio(ours: ClientFigures, base: ClientFigures) -> str:
    mine, theirs = ours.dispatch_cpu_per_1000, base.dispatch_cpu_per_1000
    return f"{mine / theirs:.2f}" if mine is not None and theirs else "-"


def _of_ideal(rate: float | None, ideal: float) -> str:
    return f"{rate / ideal:.3f}" if rate is not None and ideal != float("inf") else "-"


def _row(latency_ms: float, concurrency: int, stream: bool, rows: int, ideal: float,
         base: ClientFigures, ours: ClientFigures, name: str = "batchrun",
         spec: PathSpec = PathSpec()) -> list[str]:
    finite = ideal != float("inf")
    return [
        name,
        f"{latency_ms:g}",
        str(concurrency),
        "yes" if stream else "no",
        spec.label(),
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
        f"{ours.cpu_per_1000 / base.cpu_per_1000:.2f}",
        _window_cpu(base),
        _window_cpu(ours),
        _window_ratio(ours, base),
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
    parser.add_argument("--thoughts", choices=("on", "off"), default="off",
                        help="the job's include_thoughts (on: the users' default)")
    parser.add_argument("--thoughts-style", choices=("field", "tag"), default="field",
                        help="thoughts as reasoning_content deltas or a leading <thought> block")
    parser.add_argument("--effort", choices=("low", "medium", "high", "default"), default="low",
                        help="the job's reasoning_effort (default: none set, the API's own)")
    parser.add_argument("--parts", type=int, default=0,
                        help="each stream sent in N parts spread over the latency (0: one write)")
    parser.add_argument("--baseline-gc", choices=("lean", "default"), default="lean",
                        help="the baseline's collector (default: lean, as batchrun's)")
    parser.add_argument("--old", type=Path,
                        help="another checkout whose batchrun runs too, alternating (paired)")
    args = parser.parse_args()
    spec = PathSpec(thoughts=args.thoughts == "on", style=args.thoughts_style, parts=args.parts,
                    effort=None if args.effort == "default" else args.effort)
    os.environ["BENCH_BASELINE_GC"] = args.baseline_gc
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
    header = ["build", "latency ms", "concurrency", "stream", "thoughts, parts", "rows",
              "ideal req/s", "aiohttp req/s",
              "batchrun req/s", "batchrun / ideal", "batchrun steady / ideal",
              "aiohttp steady / ideal", "batchrun / aiohttp",
              "aiohttp CPU-s/1k", "batchrun CPU-s/1k", "CPU batchrun / aiohttp",
              "aiohttp window CPU-s/1k", "batchrun window CPU-s/1k", "window CPU ratio",
              "batchrun RSS MB", "rows ok"]
    rows = [header]
    with workdir() as work:
        for latency_ms, concurrency in cells:
            for stream in streams:
                rows.extend(measure(latency_ms, concurrency, stream, args.seconds, work,
                                    args.repeat, spec, args.old))
                print(table(rows), flush=True)
    print(machine_note())


if __name__ == "__main__":
    main()
