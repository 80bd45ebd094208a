"""How fast a big, nearly finished run resumes: time to the first request, and peak RSS.

    python bench/resume_speed.py [--rows 1000000] [--done 0.99] [--answer-chars 1000]
                                 [--repeat 3] [--no-finish] [--keep DIR]

Builds a manifest of ROWS prompt rows and a run directory as a SIGKILL would leave it: the
first DONE of the rows answered in the journal (answers of ANSWER-CHARS characters of content
and as many of thoughts), no results.parquet. The last rows are the pending ones, so a resume
must walk past every done row before it can send. Then, against a subprocess emulator:

- ideal: a fresh ``batchrun run`` of a manifest holding only the pending rows;
- resume: ``batchrun run`` on the big run directory;

each timed from process start to the emulator's first request (then killed, SIGKILL), with
the process's peak RSS (wait4); REPEAT times, alternately. Prints the medians and their
ratio. Unless --no-finish, the resume is then run to the end (sending the pending rows and
compacting results.parquet) and timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

import orjson

REPO = Path(os.environ.get("BATCHRUN_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(REPO))

from batchrun.core.result import RowResult  # noqa: E402
from batchrun.manifest.job import JobSpec  # noqa: E402
from batchrun.manifest.reader import manifest_fingerprint  # noqa: E402
from batchrun.store.rundir import RunDir, run_info  # noqa: E402

KEY = "sk-bench-resume-0000"


def write_manifest(path: Path, first: int, last: int) -> None:
    with open(path, "wb") as handle:
        for number in range(first, last):
            handle.write(orjson.dumps({"id": f"row-{number}",
                                       "prompt": f"Question {number}: why is the sky blue?"})
                         + b"\n")


def write_journal(run_path: Path, manifest: Path, rows: int, done: int, endpoint: str,
                  answer_chars: int) -> float:
    """The run directory a killed run leaves: run.json, journal (+ index), no results."""
    run = RunDir(run_path)
    run.prepare(run_info(manifest=manifest, fingerprint=manifest_fingerprint(manifest),
                         job=JobSpec().describe(), endpoint=endpoint, rows_total=rows))
    run.open_journal()
    has_line = "line" in {f.name for f in dataclasses.fields(RowResult)}
    text = ("The sky is blue because of Rayleigh scattering. " * 100)[:answer_chars]
    started = time.perf_counter()
    for number in range(done):
        extra: dict[str, Any] = {"line": number + 1} if has_line else {}
        now = time.time()
        run.append(RowResult(
            id=f"row-{number}", status="ok", content=text, thoughts=text, finish_reason="stop",
            model="gemini-3.1-pro-preview", prompt_tokens=20, completion_tokens=300,
            reasoning_tokens=400, total_tokens=720, credits=0.2912, credits_computed=0.2912,
            cost_usd=0.001456, http_status=200, attempts=1, latency_ms=900.0, started_at=now,
            finished_at=now, request_sha256=f"{number:064x}", response_id=f"chatcmpl-{number}",
            **extra,
        ))
    run.release()
    return time.perf_counter() - started


def emulator_stats(root: str) -> dict[str, Any]:
    with urllib.request.urlopen(root + "/_emulator/stats", timeout=10) as response:
        stats: dict[str, Any] = orjson.loads(response.read())
    return stats


def reset_emulator(root: str) -> None:
    request = urllib.request.Request(root + "/_emulator/reset", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def run_args(manifest: Path, out: Path, endpoint: str) -> list[str]:
    return [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
            "--endpoint", endpoint, "--yes", "--quiet", "--concurrency", "32"]


def time_to_first_request(args: list[str], root: str) -> tuple[float, float]:
    """Seconds from process start to the emulator's first request; peak RSS in MB."""
    reset_emulator(root)
    env = {**os.environ, "BATCHRUN_API_KEY": KEY}
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    first = None
    while process.poll() is None:
        if emulator_stats(root)["requests_total"] > 0:
            first = time.perf_counter() - started
            break
        time.sleep(0.005)
    if first is None:
        stderr = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"batchrun exited ({process.returncode}) before any request:\n{stderr}")
    process.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = -9
    return first, usage.ru_maxrss / 1024


def time_to_finish(args: list[str], root: str) -> tuple[float, float, int, int]:
    """Wall seconds of a whole resume, its peak RSS in MB, exit code, requests sent."""
    reset_emulator(root)
    env = {**os.environ, "BATCHRUN_API_KEY": KEY}
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss / 1024, process.returncode, emulator_stats(root)[
        "requests_total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--done", type=float, default=0.99)
    parser.add_argument("--answer-chars", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="Timings to take the median of.")
    parser.add_argument("--no-finish", action="store_true")
    parser.add_argument("--keep", type=Path, help="Work in this directory and keep it.")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="batchrun-resume-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "batchrun.emulator", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert emulator.stdout is not None
        endpoint = emulator.stdout.readline().strip().rsplit(" ", 1)[-1]
        root = endpoint[: -len("/v1")]
        done = int(args.rows * args.done)
        manifest = work / "manifest.jsonl"
        pending_manifest = work / "pending.jsonl"
        run_path = work / "run"
        if not run_path.exists():
            write_manifest(manifest, 0, args.rows)
            write_manifest(pending_manifest, done, args.rows)
            seconds = write_journal(run_path, manifest, args.rows, done, endpoint,
                                    args.answer_chars)
            journal = run_path / "journal.jsonl"
            print(f"setup: {args.rows:,} rows, {done:,} done; journal "
                  f"{journal.stat().st_size / 1e9:,.2f} GB written in {seconds:,.1f} s "
                  f"({seconds / max(done, 1) * 1e6:,.1f} µs a row)")
        ideal_out = work / "ideal"
        ideals, resumes = [], []
        for _ in range(args.repeat):  # alternated, so a busy machine slows both alike
            shutil.rmtree(ideal_out, ignore_errors=True)
            ideals.append(time_to_first_request(run_args(pending_manifest, ideal_out, endpoint),
                                                root))
            resumes.append(time_to_first_request(run_args(manifest, run_path, endpoint), root))
        ideal, ideal_rss = median(t for t, _ in ideals), max(rss for _, rss in ideals)
        resume, resume_rss = median(t for t, _ in resumes), max(rss for _, rss in resumes)
        runs = f"median of {args.repeat}" if args.repeat > 1 else "1 run"
        print(f"ideal  (fresh run of the {args.rows - done:,} pending rows): first request "
              f"after {ideal:.2f} s ({runs}), peak RSS {ideal_rss:,.0f} MB")
        print(f"resume ({args.rows:,}-row run, {args.done:.0%} done): first request after "
              f"{resume:.2f} s ({runs}), peak RSS {resume_rss:,.0f} MB")
        print(f"ratio resume/ideal: time {resume / ideal:.2f}x, peak RSS "
              f"{resume_rss / ideal_rss:.2f}x")
        if not args.no_finish:
            elapsed, rss, code, sent = time_to_finish(run_args(manifest, run_path, endpoint),
                                                      root)
            print(f"resume to the end: {elapsed:.1f} s, {sent:,} requests, exit {code}, "
                  f"peak RSS {rss:,.0f} MB (includes compacting results.parquet)")
    finally:
        emulator.send_signal(signal.SIGINT)
        emulator.wait(timeout=10)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
