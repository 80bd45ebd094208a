"""Limiter precision: achieved requests/min against ``--rpm``, and 429s against the server's limit.

    python bench/limiter_precision.py [--minutes 2] [--rpm 600] [--quick] [--cases exact,...]

Cases (the emulator on core 0 counts every answer; batchrun on core 1):
  exact        emulator --rpm R,                   batchrun --rpm R       (want: ~R/min, no 429)
  adaptive     emulator --rpm R (x-ratelimit-*),   batchrun --rpm 5R      (want: converge, <3% 429)
  blind        emulator --rpm R, no rate headers,  batchrun --rpm 5R      (only 429s to go by)
  unknown      emulator --rpm R, no rate headers,  batchrun without --rpm

The manifest holds R/min x duration rows, so a run at the limit lasts the whole duration.
Achieved rate = (rows - 1) / (last send - first send); "last 50%" is the rate of answers in
the second half of the run (after convergence). ``--quick`` runs 30 s per case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import (
    batchrun_client,
    emulator,
    journal_times,
    machine_note,
    table,
    workdir,
    write_job,
    write_manifest,
)

CASES = ("exact", "adaptive", "blind", "unknown")


def run_case(case: str, rpm: float, duration_s: float, work: Path) -> list[str]:
    server_args = ["--rpm", f"{rpm:g}", "--latency-ms", "200"]
    if case in ("blind", "unknown"):
        server_args.append("--no-rate-headers")
    configured = {"exact": rpm, "adaptive": 5 * rpm, "blind": 5 * rpm, "unknown": None}[case]
    rows = int(rpm / 60.0 * duration_s) + 1
    manifest = write_manifest(work / f"{case}.jsonl", rows)
    job = write_job(work / f"{case}.toml", stream=True, concurrency=64, rpm=configured,
                    max_attempts=20)
    out = work / f"out-{case}"
    with emulator(*server_args) as emu:
        figures = batchrun_client(manifest, job, out, emu.base_url)
        stats = emu.stats()
    sent, done_ok = journal_times(out)
    achieved = (len(sent) - 1) / (sent[-1] - sent[0]) * 60.0 if len(sent) > 1 else 0.0
    half = done_ok[0] + (done_ok[-1] - done_ok[0]) / 2 if done_ok else 0.0
    late = [t for t in done_ok if t >= half]
    late_rate = (len(late) - 1) / (late[-1] - late[0]) * 60.0 if len(late) > 1 else 0.0
    answers = stats["requests_total"]
    limited = stats["by_status"].get("429", 0)
    return [
        case,
        f"{rpm:g}",
        "-" if configured is None else f"{configured:g}",
        f"{len(sent):,}",
        f"{achieved:,.1f}",
        f"{achieved / rpm:.3f}",
        f"{late_rate:,.1f}",
        f"{limited:,} / {answers:,}",
        f"{100.0 * limited / answers:.2f}%" if answers else "-",
        f"{figures.ok:,}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=float, default=600.0)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="30 s per case")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    duration_s = 30.0 if args.quick else args.minutes * 60.0
    print(machine_note())
    rows = [["case", "server rpm", "--rpm", "rows", "achieved rpm", "vs server rpm",
             "rpm, last 50%", "429s / answers", "429 share", "rows ok"]]
    with workdir() as work:
        for case in args.cases.split(","):
            rows.append(run_case(case.strip(), args.rpm, duration_s, work))
            print(table(rows), flush=True)
    print(machine_note())


if __name__ == "__main__":
    main()
