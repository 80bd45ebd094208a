"""How fast ``batchrun estimate`` streams a large text manifest, and in how much memory.

    python bench/estimate_speed.py [--rows 1000000] [--small 100000] [--repeat 3] [--keep DIR]

Writes a text manifest of ``--rows`` rows (varied prompts, some CJK) to a temp dir, then runs,
each in its own process so that peak RSS is that process's own:
  1. ``pyarrow.json.read_json``: the file read into an Arrow table (multi-threaded): the time
     to merely read the manifest;
  2. ``pyarrow.json.open_json``: the same, streamed batch by batch;
  3. ``batchrun.manifest.reader.iter_rows`` alone: batchrun's reader, without the estimator and
     without the duplicate-id check;
  4. ``batchrun estimate MANIFEST --json``: the whole command;
and the same estimate on the first ``--small`` rows, so peak RSS can be compared (flat means
it does not grow with the manifest beyond the duplicate-id check: the id column, counted
distinct once at the end). Then the same rows as Parquet:
  5. ``pyarrow.parquet.read_table``: the bare read;
  6. ``batchrun estimate PARQUET --json``.
Prints seconds, peak RSS and the ratio of each estimate to the bare pyarrow read of its format
(the target: at most 2.5x). On a shared machine one timing can move by 2x: with ``--repeat N``
the bare reads and the estimates (1, 4, 5, 6) run N rounds, alternating, each estimate's ratio
taken to the bare read of the same round; the figures are the medians (every round printed).
The row-by-row reader (3) and the small estimate run once. ``--keep DIR`` keeps the manifests
and reuses them on the next run (they are made from a fixed seed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
RSS_LIMIT_MB = 300.0
WORDS = ("summarise the report on quarterly revenue growth costs customers regions shipping "
         "delays plan board data model answer")

READ_TABLE = """
import sys, pyarrow.json as pj
table = pj.read_json(sys.argv[1], read_options=pj.ReadOptions(block_size=1 << 24))
print(table.num_rows)
"""
READ_PARQUET = """
import sys, pyarrow.parquet as pq
print(pq.read_table(sys.argv[1]).num_rows)
"""
TARGET_RATIO = 2.5
READ_STREAM = """
import sys, pyarrow.json as pj
rows = 0
for batch in pj.open_json(sys.argv[1], read_options=pj.ReadOptions(block_size=1 << 24)):
    rows += batch.num_rows
print(rows)
"""
ITER_ROWS = """
import sys
from pathlib import Path
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
print(sum(1 for _ in iter_rows(Path(sys.argv[1]), JobSpec(), check_duplicates=False)))
"""


def write_manifest(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    words = WORDS.split(" ")
    cjk = "长城有多长为什么天空是蓝色的请总结这份报告"
    with open(path, "wb") as handle:
        for number in range(rows):
            text = " ".join(rng.choices(words, k=rng.randint(8, 60)))
            if number % 10 == 0:  # one row in ten carries CJK text
                text += " " + "".join(rng.choices(cjk, k=rng.randint(5, 40)))
            handle.write(orjson.dumps({"id": f"row-{number}", "prompt": text}) + b"\n")


WRITE_PARQUET = """
import sys, pyarrow.json as pj, pyarrow.parquet as pq
reader = pj.open_json(sys.argv[1], read_options=pj.ReadOptions(block_size=1 << 24))
with pq.ParquetWriter(sys.argv[2], reader.schema) as writer:
    for batch in reader:
        writer.write_batch(batch)
"""


def write_parquet(source: Path, target: Path) -> None:
    """The same rows as Parquet, in a child process: this one's RSS stays low, and the
    children measured later start from a copy of it (ru_maxrss counts that)."""
    subprocess.run([sys.executable, "-c", WRITE_PARQUET, str(source), str(target)], check=True)


def measure(argv: list[str]) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MB), stdout and CPU seconds (user + system) of one child
    process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed with exit code {child.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, usage.ru_maxrss / 1024.0, output, cpu  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the bare reads and the estimates (medians reported)")
    parser.add_argument("--keep", type=Path, help="write the manifests here, keep and reuse them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        big, small, parquet = prepare(folder, args.rows, args.small)
        python = sys.executable
        runs = {
            "pyarrow read_json (table)": [python, "-c", READ_TABLE, str(big)],
            "pyarrow open_json (stream)": [python, "-c", READ_STREAM, str(big)],
            "batchrun iter_rows (reader)": [python, "-c", ITER_ROWS, str(big)],
            "batchrun estimate --json": [python, "-m", "batchrun.cli", "estimate", str(big),
                                         "--json"],
            "pyarrow read_table (parquet)": [python, "-c", READ_PARQUET, str(parquet)],
            "batchrun estimate parquet": [python, "-m", "batchrun.cli", "estimate",
                                          str(parquet), "--json"],
        }
        rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        for number in range(args.repeat):
            for name, argv in runs.items():
                if number and name not in REPEATED:
                    continue
                seconds, rss, output, cpu = measure(argv)
                rounds[name].append((seconds, rss, cpu))
                if name.startswith("batchrun estimate"):  # both formats
                    assert json.loads(output)["rows"] == args.rows
        small_seconds, small_rss, _, _ = measure(
            [python, "-m", "batchrun.cli", "estimate", str(small), "--json"])
    report(args, rounds, small_seconds, small_rss)


REPEATED = ("pyarrow read_json (table)", "batchrun estimate --json",
            "pyarrow read_table (parquet)", "batchrun estimate parquet")


def prepare(folder: Path, rows: int, small_rows: int) -> tuple[Path, Path, Path]:
    """The JSONL manifest, its first ``small_rows`` rows and the same rows as Parquet (reused
    when ``folder`` already holds them: the same seed writes the same rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    big = folder / f"text-{rows}.jsonl"
    small = folder / f"text-{rows}-first-{small_rows}.jsonl"
    parquet = folder / f"text-{rows}.parquet"
    started = time.perf_counter()
    if not big.exists():
        write_manifest(big, rows)
    if not small.exists():
        with open(big, encoding="utf-8") as source, open(small, "w", encoding="utf-8") as out:
            for _, line in zip(range(small_rows), source, strict=False):
                out.write(line)
    if not parquet.exists():
        write_parquet(big, parquet)
    print(f"manifest: {rows:,} rows, {big.stat().st_size / 1e6:,.0f} MB "
          f"(ready in {time.perf_counter() - started:.1f} s)")
    return big, small, parquet


def report(args: argparse.Namespace, rounds: dict[str, list[tuple[float, float, float]]],
           small_seconds: float, small_rss: float) -> None:
    results = {name: (statistics.median(s for s, _, _ in values), max(r for _, r, _ in values))
               for name, values in rounds.items()}
    cpus = {name: statistics.median(c for _, _, c in values) for name, values in rounds.items()}
    baseline = results["pyarrow read_json (table)"][0]
    print(f"{'':30} {'seconds':>8} {'CPU s':>7} {'peak RSS':>10} {'x pyarrow read':>15}"
          + ("   (medians of the rounds; peak RSS the largest)" if args.repeat > 1 else ""))
    for name, (seconds, rss) in results.items():
        print(f"{name:30} {seconds:8.2f} {cpus[name]:7.2f} {rss:8.0f} MB "
              f"{seconds / baseline:14.1f}x")
    estimate_seconds, estimate_rss = results["batchrun estimate --json"]
    print(f"{'estimate on ' + f'{args.small:,} rows':30} {small_seconds:8.2f} "
          f"{small_rss:8.0f} MB")
    per_row_us = estimate_seconds / args.rows * 1e6
    growth = (estimate_rss - small_rss) * 1024 * 1024 / (args.rows - args.small)
    print(f"estimate: {per_row_us:.1f} µs per row; RSS grows {growth:.0f} bytes per row "
          f"beyond {args.small:,} rows (the id column is kept for the duplicate check)")
    verdict = "OK" if estimate_rss < RSS_LIMIT_MB else "OVER"
    print(f"peak RSS {estimate_rss:.0f} MB vs limit {RSS_LIMIT_MB:.0f} MB: {verdict}")
    for label, estimate_name, read_name in (
            ("JSONL", "batchrun estimate --json", "pyarrow read_json (table)"),
            ("Parquet", "batchrun estimate parquet", "pyarrow read_table (parquet)")):
        ratios = [mine[0] / bare[0] for mine, bare in zip(rounds[estimate_name],
                                                          rounds[read_name], strict=True)]
        ratio = statistics.median(ratios)
        verdict = "OK" if ratio <= TARGET_RATIO else "OVER"
        each = (" (rounds: " + ", ".join(f"{r:.2f}x" for r in ratios) + ")"
                if len(ratios) > 1 else "")
        cpu_ratio = statistics.median(mine[2] / bare[2] for mine, bare in zip(
            rounds[estimate_name], rounds[read_name], strict=True))
        print(f"{label}: estimate {results[estimate_name][0]:.2f} s = {ratio:.2f}x "
              f"{read_name} ({results[read_name][0]:.2f} s){each}; target {TARGET_RATIO}x: "
              f"{verdict}; CPU time {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
