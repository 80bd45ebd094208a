"""Soak: a long run with every fault mode at once; afterwards, every row and every paid answer
must be accounted for.

    python bench/soak.py [--rows 50000] [--concurrency 128] [--seed 7] [--keep DIR]

An emulator subprocess (low latency) injects, all mixed: 503, 500, resets before and during
the answer, 429 with sane / missing / absurd / garbage Retry-After, a proxy's HTML 502, a 200
that is an HTML page, answers without usage, streams that stall past the read timeout and
streams that end cleanly without [DONE]. On top, the credits run out a third of the way (402:
the soak tops up and resumes) and the key is revoked later (401: the soak "rotates" it and
resumes). ``batchrun run`` runs as a real process each session, exactly as a user would.

Accounting, from the emulator's own ledger (``billed_by_body``: sha256 of each billed request
body, and how many times) against results.parquet (``request_sha256`` of each row):
- paid but lost in transit: billed answers the client never received whole (cut mid-answer,
  stalled past the read timeout, ended before [DONE]); the emulator counts them as faults, the
  client retried them. Reported, and must equal what the emulator says it cut.
- paid but not recorded by batchrun: billed answers that are neither an ok row nor lost in
  transit. Must be 0.
- duplicated rows in results: must be 0. Every manifest row must be ok, failed or pending.
Exit status 0 when every must-be-0 figure is 0 and every row is accounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-soak-3c1d5e7f9a0b2c4d6e8f"
# Probabilities per request (about 16% in all), each a different way to fail. 429s are rare
# on purpose: each one pauses all dispatch for a second (the runner's cooldown), so at 1%
# they alone cut throughput about threefold and the soak would take an hour.
FAULTS = {
    "--fail-503": 0.03, "--fail-500": 0.02, "--drop-rate": 0.04, "--fail-429": 0.001,
    "--fail-502": 0.02, "--not-json-rate": 0.02, "--no-usage-rate": 0.01,
    "--stall-rate": 0.003, "--early-eof-rate": 0.02,
}
READ_TIMEOUT_S = 0.5
STALL_S = 2.0
CREDITS_PER_ROW = 0.2  # about what an emulated row costs: sizes the balance that runs out


def start_emulator(seed: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-m", "batchrun.emulator", "--port", "0", "--latency-ms", "2",
            "--jitter-ms", "3", "--seed", str(seed), "--retry-after", "mixed",
            "--stall-s", str(STALL_S)]
    for flag, rate in FAULTS.items():
        args += [flag, str(rate)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("batchrun emulator listening on "):
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, line.rsplit(" ", 1)[-1]


def write_manifest(path: Path, rows: int) -> None:
    topics = ["the tides", "a prime sieve", "photosynthesis", "TCP slow start", "the Rhine",
              "compound interest", "sourdough", "the Krebs cycle", "B-trees", "glaciers"]
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(rows):
            topic = topics[number % len(topics)]
            handle.write(json.dumps({"id": f"row-{number:06d}",
                                     "prompt": f"In two sentences, #{number}: explain {topic}."})
                         + "\n")


def run_session(manifest: Path, out: Path, endpoint: str, concurrency: int,
                env: dict[str, str]) -> dict[str, Any]:
    args = [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
            "--endpoint", endpoint, "--concurrency", str(concurrency), "--yes", "--quiet",
            "--json", "--ignore-balance", "--read-timeout", str(READ_TIMEOUT_S)]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True,
                          env={**env, "BATCHRUN_API_KEY": KEY})
    if "Traceback" in done.stderr:
        raise SystemExit(f"batchrun crashed:\n{done.stderr}")
    status = json.loads(done.stdout) if done.stdout.strip() else {}
    stopped = next((line for line in done.stderr.splitlines() if line.startswith("stopped:")), "")
    unrecorded = sum(int(line.split()[1].replace(",", "")) for line in done.stderr.splitlines()
                     if line.startswith("warning:") and "could not be written" in line)
    return {"exit": done.returncode, "stop_reason": status.get("stop_reason"),
            "stopped": stopped, "seconds": time.monotonic() - started,
            "unrecorded": unrecorded, "stderr": done.stderr, "status": status}


def control(endpoint: str, path: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    root = endpoint[: -len("/v1")]
    if changes is None:
        response = httpx.get(f"{root}/_emulator/{path}", timeout=10)
    else:
        response = httpx.post(f"{root}/_emulator/{path}", json=changes, timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def soak(rows: int, concurrency: int, seed: int, workdir: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    manifest = workdir / "manifest.jsonl"
    out = workdir / "run"
    write_manifest(manifest, rows)
    emulator, endpoint = start_emulator(seed, env)
    sessions: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        # Credits for about a third of the rows, then a 402 mid-run.
        control(endpoint, "config", {"balance": rows * CREDITS_PER_ROW / 3})
        revoked_once = False
        for _ in range(8):
            session = run_session(manifest, out, endpoint, concurrency, env)
            sessions.append(session)
            stopped = session["stopped"]
            if session["exit"] == 3 and "insufficient_credits" in stopped:
                # Top up; and revoke the key once another third of the rows has been sent.
                seen = control(endpoint, "stats")["requests_total"]
                control(endpoint, "config", {"balance": None,
                                             "revoke_after": seen + int(rows * 0.4)})
                session["then"] = "topped up"
                continue
            if session["exit"] == 3 and "invalid_api_key" in stopped and not revoked_once:
                revoked_once = True
                control(endpoint, "config", {"revoke_after": None})  # a fresh key
                session["then"] = "new key"
                continue
            if session["exit"] in (0, 1) and not session["status"].get("rows_retryable"):
                break
            session["then"] = "resume"
        stats = control(endpoint, "stats")
    finally:
        emulator.terminate()
        emulator.wait(10)
    elapsed = time.monotonic() - started
    return report(rows, concurrency, seed, manifest, out, sessions, stats, elapsed)


def report(rows: int, concurrency: int, seed: int, manifest: Path, out: Path,
           sessions: list[dict[str, Any]], stats: dict[str, Any], elapsed: float) -> int:
    manifest_ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    table = pq.read_table(out / "results.parquet").to_pylist()
    ids = [row["id"] for row in table]
    duplicated = len(ids) - len(set(ids))
    unknown = set(ids) - set(manifest_ids)
    pending = len(set(manifest_ids) - set(ids))
    ok = [row for row in table if row["status"] == "ok"]
    failed = [row for row in table if row["status"] == "error"]
    without_usage = sum(1 for row in ok if row["error_code"] == "missing_usage")

    billed: dict[str, int] = stats["billed_by_body"]
    billed_total = sum(billed.values())
    ok_shas = Counter(row["request_sha256"] for row in ok)
    recorded_paid = sum(1 for sha in ok_shas if sha in billed)
    ok_never_billed = sum(1 for sha in ok_shas if sha not in billed)
    faults: dict[str, int] = stats["faults"]
    lost_in_transit = faults.get("truncate", 0) + faults.get("stall", 0) + \
        faults.get("early_eof", 0)
    # Per body: every billing beyond the recorded answer must be a fault the emulator cut.
    extra_billings = sum(count - (1 if sha in ok_shas else 0) for sha, count in billed.items())
    paid_not_recorded = billed_total - recorded_paid - lost_in_transit
    unrecorded_said = sum(session["unrecorded"] for session in sessions)

    print(f"soak: {rows:,} rows · concurrency {concurrency} · seed {seed} · "
          f"{elapsed:,.0f} s · {rows / elapsed:,.0f} rows/s")
    for number, session in enumerate(sessions, 1):
        reason = session["stopped"].split(" after ")[0].removeprefix("stopped: ")[:90]
        then = f" → {session['then']}" if session.get("then") else ""
        print(f"  session {number}: exit {session['exit']} in {session['seconds']:,.0f} s"
              f"{' · ' + reason if reason else ''}{then}")
    kinds = ", ".join(f"{kind} ×{count:,}" for kind, count in
                      sorted(faults.items(), key=lambda item: -item[1]))
    print(f"faults injected by kind (emulator): {kinds}  (total {sum(faults.values()):,})")
    print(f"requests the emulator saw: {stats['requests_total']:,} · billed answers: "
          f"{billed_total:,} ({stats['credits_billed']:,.2f} credits)")
    print(f"rows: {rows:,} · in results {len(table):,} · pending {pending:,}")
    print(f"rows ok: {len(ok):,} (of which without usage, flagged: {without_usage:,})")
    reasons = Counter((row["error_code"], (row["error_message"] or "")[:70]) for row in failed)
    print(f"rows failed: {len(failed):,}" + ("" if failed else " (none)"))
    for (code, message), count in reasons.most_common(8):
        print(f"  {code} ×{count:,}: {message}")
    print(f"answers paid but lost in transit (cut, stalled or ended early on the wire, then "
          f"retried): {lost_in_transit:,} · billings beyond one per recorded row: "
          f"{extra_billings:,}")
    print(f"answers batchrun received but could not write (reported by it): {unrecorded_said:,}")
    print(f"answers paid but not recorded by batchrun: {paid_not_recorded:,} (must be 0)")
    print(f"ok rows the emulator never billed: {ok_never_billed:,} (must be 0)")
    print(f"duplicated rows in results: {duplicated:,} (must be 0)")

    problems = []
    if paid_not_recorded or extra_billings != lost_in_transit:
        problems.append("a paid answer is unaccounted for")
    if ok_never_billed:
        problems.append("an ok row was never billed")
    if duplicated or unknown:
        problems.append("results hold duplicated or unknown ids")
    if len(ok) + len(failed) + pending != rows:
        problems.append("rows are not all accounted for")
    print("verdict: " + ("every row and every paid answer accounted for" if not problems
                         else "FAILED: " + "; ".join(problems)))
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="Keep the manifest and RUN_DIR here.")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        sys.exit(soak(args.rows, args.concurrency, args.seed, args.keep))
    with tempfile.TemporaryDirectory(prefix="batchrun-soak-") as workdir:
        sys.exit(soak(args.rows, args.concurrency, args.seed, Path(workdir)))


if __name__ == "__main__":
    main()
