"""Real conditions: batchrun against a shared gateway that refuses a share of requests with 429
whatever our rate, a rate limit that steps during the run, and Ctrl-C in the middle of it.

    python bench/real_conditions.py [--cases background,bucket,steps,interrupt] [--quick]
                                    [--rows 10000] [--minutes 1.5] [--step-seconds 60]

The emulator runs on core 0, the real ``batchrun run`` on core 1 (``bench/client_batchrun.py``;
for ``interrupt`` a real ``python -m batchrun.cli run`` process). Both take the path users get
by default: streamed, thoughts on (reasoning effort left to the API's default, high), answers
sent in 4 parts spread over the latency (``--stream-parts 4``); ``max_attempts = 20`` so that
no row fails from background 429s.

Cases:
  background  200 ms, concurrency 64, --rows rows: --fail-429 0.01 / 0.05 / 0.10 (Retry-After:
              1) and 0.05 without Retry-After, each right after a fault-free run of the same
              rows (its baseline: the machine's speed drifts over minutes). Want: rows/s >=
              0.9 x (1 - p) x the fault-free rate, every row ok, and the emulator received
              exactly rows + 429s + other faults (no extra retries).
  bucket      emulator --rpm 600 (token bucket, rate headers on), batchrun told rpm = 3000,
              600 rows/min x --minutes: achieved/min from the journal's first sends (as
              bench/limiter_precision.py), want within 2% of 600 and < 3% 429s; then the same
              with --fail-429 0.02 on top, want >= 0.9 x 600/min.
  steps       emulator --rpm-schedule 1200@0,300@S,1200@2S (S = --step-seconds), batchrun told
              rpm = 3000, rows for the whole schedule; with rate headers, then without (blind).
              Want: 200 answers >= 85% of what the schedule allowed over the run, < 5% 429s,
              and after each step the send rate (emulator-side, 2-s windows sliding by 1 s,
              429s included) within 10% of the new limit in <= 20 s.
  interrupt   5% 429s, 200 ms, concurrency 64, rows for ~20 s; SIGINT after ~5 s. Want: exit
              within 2 s + 0.2 s latency of the signal, exit code 130, a resume command in
              the output, and after running it every row in results.parquet once, all ok.

``--quick`` shrinks everything (2,000 background rows, 30-s bucket runs, 15-s steps, ~12 s of
rows for the interrupt) to check the script end to end; its figures are not the targets'.
A closing table lists every target and whether it holds.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from harness import (
    CLIENT_CORE,
    ROOT,
    ClientFigures,
    Emulator,
    batchrun_client,
    emulator,
    host_speed_probe,
    journal_times,
    machine_note,
    pinned,
    table,
    workdir,
    write_job,
    write_manifest,
)

sys.path.insert(0, str(ROOT))

from batchrun.emulator.schedule import (  # noqa: E402  (after the path fix, as a script)
    Schedule,
    allowed_between,
    format_rpm_schedule,
    parse_rpm_schedule,
)

CASES = ("background", "bucket", "steps", "interrupt")
LATENCY_MS = 200.0
CONCURRENCY = 64
STREAM = ("--latency-ms", f"{LATENCY_MS:g}", "--stream-parts", "4")
API_KEY = "sk-bench-key-0000"
SERVER_RPM = 600.0
CLIENT_RPM = 3000.0
# (label, fail_429, retry_after) of the background case; the first is the baseline.
BACKGROUND = [("fault-free", 0.0, "seconds"), ("429 1%", 0.01, "seconds"),
              ("429 5%", 0.05, "seconds"), ("429 10%", 0.10, "seconds"),
              ("429 5%, no Retry-After", 0.05, "none")]


@dataclass
class Check:
    """One line of the closing table; ``holds`` None when it could not be measured."""

    case: str
    target: str
    figure: str
    holds: bool | None


def _yes(holds: bool | None) -> str:
    return "-" if holds is None else ("yes" if holds else "**no**")


def bench_job(path: Path, rpm: float | None = None) -> Path:
    """The users' default path: streamed, thoughts on, the API's reasoning effort."""
    return write_job(path, stream=True, concurrency=CONCURRENCY, rpm=rpm, max_attempts=20,
                     include_thoughts=True, reasoning_effort=None)


# --- what a run left ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """Rows in results.parquet: how many, how many ok, whether each id is there once."""

    rows: int
    ok: int
    once: bool

    def all_ok(self, expected: int) -> bool:
        return self.rows == expected and self.ok == expected and self.once


def read_outcome(out: Path) -> Outcome:
    path = out / "results.parquet"
    if not path.exists():
        return Outcome(0, 0, False)
    columns = pq.read_table(path, columns=["id", "status"]).to_pydict()
    ids, statuses = columns["id"], columns["status"]
    return Outcome(len(ids), sum(s == "ok" for s in statuses), len(set(ids)) == len(ids))


def per_minute(times: list[float]) -> float:
    """Events per minute between the first and the last of ``times``."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0]) * 60.0


def statuses(stats: dict[str, Any]) -> tuple[int, int, int]:
    """(requests received, 200 answers, 429 answers) of the emulator's stats."""
    by_status = stats["by_status"]
    return stats["requests_total"], by_status.get("200", 0), by_status.get("429", 0)


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def run_batchrun(label: str, manifest: Path, job: Path, out: Path,
                 emu: Emulator) -> ClientFigures | None:
    """One client run with the host probe printed before it; None (reported) if it failed."""
    probe = host_speed_probe(CLIENT_CORE)
    print(f"  {label}: host probe {probe:.3f} s", flush=True)
    try:
        return batchrun_client(manifest, job, out, emu.base_url)
    except RuntimeError as exc:
        print(f"  {label}: the client failed: {str(exc)[-600:]}", flush=True)
        return None


# --- background: a share of 429s whatever our rate ---------------------------------------------


def case_background(rows: int, work: Path, checks: list[Check]) -> None:
    manifest = write_manifest(work / "background.jsonl", rows)
    job = bench_job(work / "background.toml")
    header = ["background", "rows/s", "vs fault-free", "target", "holds", "rows ok",
              "received", "rows + 429s + other", "extra", "wall s", "exit"]
    lines = [header]
    baseline: float | None = None
    # Each faulty run is paired with a fault-free run just before it: this machine's speed
    # drifts over minutes, so a ratio against one baseline at the start would measure drift.
    runs = [BACKGROUND[0]]
    for case in BACKGROUND[1:]:
        runs += [BACKGROUND[0], case]
    for index, (label, fail_429, style) in enumerate(runs):
        out = work / f"out-background-{index}"
        with emulator(*STREAM, "--fail-429", f"{fail_429:g}", "--retry-after", style) as emu:
            figures = run_batchrun(label, manifest, job, out, emu)
            stats = emu.stats()
        if fail_429 == 0:
            baseline = figures.rate if figures else None
            if index > 0:
                continue  # a pairing baseline: the first one stands for all in the table
        lines.append(_background_line(label, fail_429, rows, figures, stats, baseline, out,
                                      checks))
        print(table(lines), flush=True)


def _background_line(label: str, fail_429: float, rows: int, figures: ClientFigures | None,
                     stats: dict[str, Any], baseline: float | None, out: Path,
                     checks: list[Check]) -> list[str]:
    outcome = read_outcome(out)
    received, _, refused = statuses(stats)
    other = sum(n for kind, n in stats["faults"].items() if kind not in ("429", "rpm"))
    expected = rows + refused + other
    rate = figures.rate if figures else 0.0
    ratio = rate / baseline if baseline else None
    goal = 0.9 * (1.0 - fail_429)
    holds = None if ratio is None or fail_429 == 0 else ratio >= goal
    if fail_429 > 0:
        checks.append(Check("background", f"{label}: rows/s >= {goal:.3f} x fault-free",
                            "-" if ratio is None else f"{ratio:.3f}", holds))
    checks.append(Check("background", f"{label}: every row ok",
                        f"{outcome.ok:,} of {rows:,}", outcome.all_ok(rows)))
    checks.append(Check("background", f"{label}: no extra requests",
                        f"{received - expected:+,}", received == expected))
    return [label, f"{rate:,.1f}", "-" if ratio is None else f"{ratio:.3f}",
            "baseline" if fail_429 == 0 else f">= {goal:.3f}", _yes(holds),
            f"{outcome.ok:,}" + ("" if outcome.once else " (dup)"), f"{received:,}",
            f"{expected:,}", f"{received - expected:+,}",
            f"{figures.extra.get('wall_s', 0.0):.1f}" if figures else "-",
            str(figures.extra.get("exit_code", "-")) if figures else "failed"]


# --- bucket: the server's own limit, with and without background 429s --------------------------


def case_bucket(minutes: float, work: Path, checks: list[Check]) -> None:
    rows = int(SERVER_RPM * minutes) + 1
    manifest = write_manifest(work / "bucket.jsonl", rows)
    job = bench_job(work / "bucket.toml", rpm=CLIENT_RPM)
    lines = [["bucket", "rows", "sent/min (first sends)", "vs 600", "ok/min", "429s / received",
              "429 share", "of which background", "rows ok", "wall s"]]
    for index, fail_429 in enumerate((0.0, 0.02)):
        label = "rpm 600" + (f" + 429 {fail_429:.0%}" if fail_429 else "")
        out = work / f"out-bucket-{index}"
        with emulator(*STREAM, "--rpm", f"{SERVER_RPM:g}", "--fail-429", f"{fail_429:g}") as emu:
            figures = run_batchrun(label, manifest, job, out, emu)
            stats = emu.stats()
        sent, done_ok = journal_times(out)
        achieved, ok_rate = per_minute(sent), per_minute(done_ok)
        received, _, refused = statuses(stats)
        outcome = read_outcome(out)
        lines.append([label, f"{rows:,}", f"{achieved:,.1f}", f"{achieved / SERVER_RPM:.3f}",
                      f"{ok_rate:,.1f}", f"{refused:,} / {received:,}",
                      f"{share(refused, received):.2%}", f"{stats['faults'].get('429', 0):,}",
                      f"{outcome.ok:,}",
                      f"{figures.extra.get('wall_s', 0.0):.1f}" if figures else "failed"])
        if not sent:
            checks.append(Check("bucket", f"{label}: the run", "no row was sent", False))
        else:
            _bucket_checks(label, fail_429, achieved, share(refused, received), checks)
        checks.append(Check("bucket", f"{label}: every row ok", f"{outcome.ok:,} of {rows:,}",
                            outcome.all_ok(rows)))
        print(table(lines), flush=True)


def _bucket_checks(label: str, fail_429: float, achieved: float, refused_share: float,
                   checks: list[Check]) -> None:
    if fail_429 == 0:
        checks.append(Check("bucket", f"{label}: within 2% of 600/min", f"{achieved:,.1f}/min",
                            abs(achieved / SERVER_RPM - 1.0) <= 0.02))
        checks.append(Check("bucket", f"{label}: < 3% 429s", f"{refused_share:.2%}",
                            refused_share < 0.03))
        return
    checks.append(Check("bucket", f"{label}: >= 0.9 x 600/min", f"{achieved:,.1f}/min",
                        achieved >= 0.9 * SERVER_RPM))


# --- steps: a limit that moves during the run --------------------------------------------------


def step_schedule(step_s: float) -> Schedule:
    return parse_rpm_schedule(f"1200@0,300@{step_s:g},1200@{2 * step_s:g}")


def settle_s(by_second: dict[int, int], start: float, until: float, limit: float,
             window: int = 2) -> float | None:
    """Seconds from ``start`` to the first ``window``-second window (sliding by 1 s, inside
    [start, until]) whose send rate is within 10% of ``limit``; None if none is."""
    second = math.ceil(start)
    while second + window <= until:
        rate = sum(by_second.get(s, 0) for s in range(second, second + window)) * 60.0 / window
        if abs(rate - limit) <= 0.1 * limit:
            return second - start
        second += 1
    return None


def case_steps(step_s: float, work: Path, checks: list[Check]) -> None:
    steps = step_schedule(step_s)
    rows = int(allowed_between(steps, 0.0, 3 * step_s))
    manifest = write_manifest(work / "steps.jsonl", rows)
    job = bench_job(work / "steps.toml", rpm=CLIENT_RPM)
    header = ["steps", "rows", "run s", "200s / allowed", "429s / received", "429 share",
              *(f"settle to {s.rpm:g}@{s.at_s:g} s" for s in steps), "rows ok", "exit"]
    lines = [header]
    for blind in (False, True):
        label = "blind (no rate headers)" if blind else "rate headers"
        args = [*STREAM, "--rpm-schedule", format_rpm_schedule(steps), "--count-by-second"]
        out = work / f"out-steps-{int(blind)}"
        with emulator(*args, *(["--no-rate-headers"] if blind else [])) as emu:
            emu.reset()  # the schedule's clock starts as the client does
            figures = run_batchrun(label, manifest, job, out, emu)
            stats = emu.stats()
            origin = time.time() - stats["clock_s"]  # the clock's 0 in epoch seconds
        lines.append([*_steps_line(label, steps, rows, stats, origin, out, checks),
                      str(figures.extra.get("exit_code", "-")) if figures else "failed"])
        print(table(lines), flush=True)


def _steps_line(label: str, steps: Schedule, rows: int, stats: dict[str, Any], origin: float,
                out: Path, checks: list[Check]) -> list[str]:
    sent, done_ok = journal_times(out)
    if not sent:
        checks.append(Check("steps", f"{label}: the run", "no row was sent", False))
        return [label, f"{rows:,}", "-", "-", "-", "-", *("-" for _ in steps), "0"]
    start = sent[0] - origin
    end = max(done_ok[-1] if done_ok else 0.0, sent[-1]) - origin
    allowed = allowed_between(steps, start, end)
    received, answered, refused = statuses(stats)
    used = share(answered, int(allowed)) if allowed >= 1 else 0.0
    by_second = {int(s): n for s, n in stats["requests_by_second"].items()}
    settles = []
    for index, step in enumerate(steps):
        until = min(end, steps[index + 1].at_s if index + 1 < len(steps) else end)
        settled = settle_s(by_second, max(step.at_s, start), until, step.rpm)
        settles.append(settled)
        checks.append(Check("steps", f"{label}: to within 10% of {step.rpm:g}/min "
                            f"(step at {step.at_s:g} s) in <= 20 s",
                            "never" if settled is None else f"{settled:.0f} s",
                            settled is not None and settled <= 20.0))
    checks.append(Check("steps", f"{label}: 200s >= 85% of what the schedule allowed",
                        f"{used:.3f}", used >= 0.85))
    checks.append(Check("steps", f"{label}: < 5% 429s", f"{share(refused, received):.2%}",
                        share(refused, received) < 0.05))
    outcome = read_outcome(out)
    return [label, f"{rows:,}", f"{start:.1f}-{end:.1f}", f"{answered:,} / {allowed:,.0f} = "
            f"{used:.3f}", f"{refused:,} / {received:,}", f"{share(refused, received):.2%}",
            *("never" if s is None else f"{s:.0f} s" for s in settles),
            f"{outcome.ok:,}" + ("" if outcome.all_ok(rows) else " (not all)")]


# --- interrupt: Ctrl-C on a real process, then its resume command ------------------------------


def cli_argv(args: list[str]) -> list[str]:
    """``batchrun ARGS`` as this interpreter's ``-m batchrun.cli``, pinned to the client core."""
    return pinned(CLIENT_CORE, [sys.executable, "-m", "batchrun.cli", *args])


def resume_command(stderr: str) -> list[str] | None:
    """The command printed after "to resume:", as argv; None if the output names none."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.rstrip().endswith("to resume:"):
            words = shlex.split(lines[index + 1].strip())
            return words if words[:2] == ["batchrun", "run"] else None
    return None


def interrupt_run(manifest: Path, job: Path, out: Path, emu: Emulator,
                  after_s: float) -> tuple[int | None, float | None, str]:
    """(exit code, seconds from SIGINT to exit, stderr) of a run interrupted ``after_s``
    seconds after it started (once it has sent something); no seconds when the process
    had ended before the signal."""
    env = {**os.environ, "BATCHRUN_API_KEY": API_KEY}
    argv = cli_argv(["run", str(manifest), "--job", str(job), "--out", str(out),
                     "--endpoint", emu.base_url, "--yes"])
    err_path = out.parent / f"{out.name}.stderr"
    with open(err_path, "w") as err:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=err)
        started = time.monotonic()
        while emu.stats()["requests_total"] == 0 and time.monotonic() - started < 60:
            if process.poll() is not None:
                break
            time.sleep(0.1)
        while process.poll() is None and time.monotonic() < started + after_s:
            time.sleep(0.05)
        if process.poll() is not None:
            return process.returncode, None, err_path.read_text()
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            code: int | None = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        stop_s = time.monotonic() - signalled
    return code, stop_s, err_path.read_text()


def resume(command: list[str]) -> int:
    """Run the printed resume command (``batchrun`` as this interpreter's module)."""
    env = {**os.environ, "BATCHRUN_API_KEY": API_KEY}
    done = subprocess.run(cli_argv(command[1:]), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"  resume exited {done.returncode}: {done.stderr[-600:]}", flush=True)
    return done.returncode


def case_interrupt(seconds: float, work: Path, checks: list[Check]) -> None:
    rows = int(CONCURRENCY / (LATENCY_MS / 1000.0) * seconds)
    manifest = write_manifest(work / "interrupt.jsonl", rows)
    job = bench_job(work / "interrupt.toml")
    out = work / "out-interrupt"
    limit_s = 2.0 + LATENCY_MS / 1000.0
    with emulator(*STREAM, "--fail-429", "0.05", "--retry-after", "seconds") as emu:
        print(f"  interrupt: host probe {host_speed_probe(CLIENT_CORE):.3f} s", flush=True)
        code, stop_s, stderr = interrupt_run(manifest, job, out, emu, after_s=5.0)
        before = read_outcome(out)
        command = resume_command(stderr)
        if command is None:
            print("  the run's last output lines:\n    "
                  + "\n    ".join(stderr.strip().splitlines()[-8:]), flush=True)
        resumed = resume(command) if command else None
        stats = emu.stats()
    outcome = read_outcome(out)
    paid_twice = sum(n - 1 for n in stats["billed_by_body"].values() if n > 1)
    stopped = "ended before SIGINT" if stop_s is None else f"{stop_s:.2f} s"
    print(table([
        ["interrupt", "rows", "SIGINT to exit", "exit code", "resume command",
         "rows before resume", "resume exit", "rows ok after", "each once", "paid twice"],
        ["5% 429", f"{rows:,}", stopped, str(code),
         shlex.join(command) if command else "none", f"{before.rows:,}", str(resumed),
         f"{outcome.ok:,}", "yes" if outcome.once else "no", f"{paid_twice:,}"],
    ]), flush=True)
    checks += [
        Check("interrupt", f"exit within {limit_s:.1f} s of SIGINT", stopped,
              stop_s is not None and stop_s <= limit_s),
        Check("interrupt", "exit code 130", str(code), code == 130),
        Check("interrupt", "the output names a resume command", "yes" if command else "no",
              command is not None),
        Check("interrupt", "after the resume: every row once, all ok",
              f"{outcome.ok:,} of {rows:,}", resumed == 0 and outcome.all_ok(rows)),
    ]


# --- the script ---------------------------------------------------------------------------------


@dataclass
class Sizes:
    rows: int  # background
    minutes: float  # bucket
    step_s: float  # steps
    interrupt_s: float  # rows for this long at the ideal rate


def sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(args.rows or 2_000, args.minutes or 0.5, args.step_seconds or 15.0, 12.0)
    return Sizes(args.rows or 10_000, args.minutes or 1.5, args.step_seconds or 60.0, 20.0)


def run_case(name: str, size: Sizes, work: Path, checks: list[Check]) -> None:
    """One case; a crash in it is reported as a failed check and the next case still runs."""
    cases: dict[str, Callable[[], None]] = {
        "background": lambda: case_background(size.rows, work, checks),
        "bucket": lambda: case_bucket(size.minutes, work, checks),
        "steps": lambda: case_steps(size.step_s, work, checks),
        "interrupt": lambda: case_interrupt(size.interrupt_s, work, checks),
    }
    print(f"\n## {name}\n", flush=True)
    try:
        cases[name]()
    except Exception as exc:  # a bench reports a broken case and goes on
        print(f"  {name} could not run: {type(exc).__name__}: {exc}", flush=True)
        checks.append(Check(name, "the case runs", f"{type(exc).__name__}", False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: "
                        + ", ".join(CASES))
    parser.add_argument("--quick", action="store_true", help="small runs, to check the script")
    parser.add_argument("--rows", type=int, help="rows of each background run [10,000]")
    parser.add_argument("--minutes", type=float, help="length of each bucket run [1.5]")
    parser.add_argument("--step-seconds", type=float, help="length of each schedule step [60]")
    args = parser.parse_args()
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    print("command: " + shlex.join(["python", *sys.argv]))
    print(machine_note(), flush=True)
    checks: list[Check] = []
    with workdir() as work:
        for name in names:
            run_case(name, sizes(args), work, checks)
    print("\n## targets\n")
    print(table([["case", "target", "figure", "holds"],
                 *([c.case, c.target, c.figure, _yes(c.holds)] for c in checks)]))
    print(machine_note())


if __name__ == "__main__":
    main()
