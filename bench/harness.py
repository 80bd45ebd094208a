"""What every bench script shares: the emulator on core 0, clients on core 1, their figures.

Clients run as subprocesses (``bench/client_batchrun.py``, ``bench/client_baseline.py``) pinned
with ``taskset`` and report one JSON line: the work they did and the CPU seconds of their own
process measured around it (start-up — interpreter, imports — excluded). Peak RSS comes from
the kernel (``os.wait4``), so it covers the whole life of the process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
EMULATOR_CORE = "0"
CLIENT_CORE = "1"


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c core`` when taskset exists (it does on the bench machine)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *argv]
    return list(argv)


def machine_note() -> str:
    """Cores and load, printed with every figure: the machine may be shared."""
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"(python {sys.version.split()[0]})")


def host_speed_probe(core: str = "1") -> float:
    """CPU seconds of a fixed pure-Python loop on ``core``: the host of this VM lends its
    cores at varying speed (the same loop measured 0.35 s and 0.55 s minutes apart), so
    every client run is printed with the probe taken just before it."""
    started = time.process_time()
    previous = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if previous is not None:
        os.sched_setaffinity(0, {int(core)})
    try:
        started = time.process_time()
        total = 0
        for number in range(1_500_000):
            total += number * number
        return time.process_time() - started
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)


@dataclass
class Emulator:
    """A running ``python -m batchrun.emulator`` subprocess."""

    process: subprocess.Popen[str]
    base_url: str  # http://127.0.0.1:PORT/v1

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root_url + "/_emulator/stats", timeout=10) as answer:
            stats: dict[str, Any] = orjson.loads(answer.read())
        return stats

    def reset(self) -> None:
        request = urllib.request.Request(self.root_url + "/_emulator/reset", data=b"",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def cpu_s(self) -> float:
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    """Start the emulator on core 0 with ``args`` (e.g. ``--latency-ms 200``); stop it after."""
    argv = pinned(EMULATOR_CORE, [sys.executable, "-m", "batchrun.emulator", "--port", "0",
                                  *args])
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if "http://" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield Emulator(process, line.rsplit(" ", 1)[-1])
    finally:
        stop(process, 10)


def stop(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``; reaped either way."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_manifest(path: Path, rows: int, *, prompt_chars: int = 60) -> Path:
    """A text manifest of ``rows`` prompt rows, written in blocks (no row list in memory)."""
    pad = "x" * max(0, prompt_chars - 30)
    with open(path, "wb") as handle:
        block: list[bytes] = []
        for number in range(rows):
            block.append(orjson.dumps({"id": f"r{number}",
                                       "prompt": f"question number {number} {pad}"}))
            if len(block) >= 10_000:
                handle.write(b"\n".join(block) + b"\n")
                block = []
        if block:
            handle.write(b"\n".join(block) + b"\n")
    return path


def write_job(path: Path, *, stream: bool, concurrency: int, rpm: float | None = None,
              max_attempts: int = 8, include_thoughts: bool = False,
              reasoning_effort: str | None = "low") -> Path:
    """The bench job: short text answers, no thoughts unless asked (the smallest honest
    answer; ``include_thoughts=True`` is the users' default path). ``reasoning_effort=None``
    leaves the line out: the API's default (high), as a job that does not say gets."""
    lines = ["[job]", 'name = "bench"', 'model = "gemini-3.1-pro"',
             f"stream = {'true' if stream else 'false'}",
             f"include_thoughts = {'true' if include_thoughts else 'false'}",
             "expected_output_tokens = 50",
             f"concurrency = {concurrency}", f"max_attempts = {max_attempts}"]
    if reasoning_effort is not None:
        lines.append(f'reasoning_effort = "{reasoning_effort}"')
    if rpm is not None:
        lines.append(f"rpm = {rpm}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class ClientFigures:
    """What one client process reported, plus what the kernel says about it."""

    requests: int  # answers received (any status)
    ok: int
    elapsed_s: float  # dispatch: first send to last answer
    cpu_s: float  # process CPU (user + system) around the work, start-up excluded
    max_rss_mb: float
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        """Answers/s once the pool is full and before it drains (``bench/steady.py``)."""
        value = self.extra.get("steady_rate")
        return float(value) if value is not None else None

    @property
    def cpu_per_1000(self) -> float:
        return 1000.0 * self.cpu_s / self.requests if self.requests else float("nan")

    @property
    def dispatch_cpu_per_1000(self) -> float | None:
        """CPU per 1,000 requests between the first send and the last answer, when the
        client reports it (``cpu_window``)."""
        value = self.extra.get("dispatch_cpu_s")
        if value is None or not self.requests:
            return None
        return 1000.0 * float(value) / self.requests


def run_client(argv: Sequence[str], *, timeout_s: float = 3600.0) -> ClientFigures:
    """Run a client script on core 1; it prints its figures as the last stdout line."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(pinned(CLIENT_CORE, [sys.executable, *argv]), cwd=ROOT,
                                   stdout=out, stderr=err)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise RuntimeError(f"client {argv} failed ({process.returncode}): "
                               f"{err.read().decode()[-2000:]}")
        report = orjson.loads(lines[-1])
    # ru_maxrss is in KiB on Linux; it is the peak of the process (taskset execs into it).
    return ClientFigures(requests=report["requests"], ok=report["ok"],
                         elapsed_s=report["elapsed_s"], cpu_s=report["cpu_s"],
                         max_rss_mb=usage.ru_maxrss / 1024.0,
                         extra={k: v for k, v in report.items()
                                if k not in ("requests", "ok", "elapsed_s", "cpu_s")})


def batchrun_client(manifest: Path, job: Path, out: Path, endpoint: str,
                    *extra: str) -> ClientFigures:
    return run_client([str(BENCH / "client_batchrun.py"), str(manifest), str(job), str(out),
                       endpoint, *extra])


def baseline_client(manifest: Path, job: Path, endpoint: str) -> ClientFigures:
    return run_client([str(BENCH / "client_baseline.py"), str(manifest), str(job), endpoint])


def ideal_rate(concurrency: int, latency_s: float, rpm: float | None = None,
               server_max: float | None = None) -> float:
    """``min(concurrency / latency, rpm / 60)``; with no latency and no rpm the ceiling is the
    server's own speed, which the caller passes as ``server_max``."""
    limits = [float("inf")]
    if latency_s > 0:
        limits.append(concurrency / latency_s)
    if rpm:
        limits.append(rpm / 60.0)
    if server_max:
        limits.append(server_max)
    return min(limits)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="batchrun-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def table(rows: list[list[str]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def journal_times(out: Path) -> tuple[list[float], list[float]]:
    """First-send times of every row and finish times of the ok ones (epoch seconds), from
    a run directory's journal; empty when the run wrote none."""
    sent: list[float] = []
    done_ok: list[float] = []
    path = out / "journal.jsonl"
    if not path.exists():
        return sent, done_ok
    with open(path, "rb") as journal:
        for line in journal:
            record = orjson.loads(line)
            sent.append(record["started_at"])
            if record["status"] == "ok":
                done_ok.append(record["finished_at"])
    return sorted(sent), sorted(done_ok)
