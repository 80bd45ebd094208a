"""Past one machine (issue 17): the local engine against the Ray engine with 1 and 2 workers on
the same manifest and emulator, the governor's own capacity, and a global rate and spending cap
kept across 2 workers.

    python bench/ray_scale.py                       # every cell (~6.5 min on the 2-core machine)
    python bench/ray_scale.py --quick               # smaller runs, to check the script end to end
    python bench/ray_scale.py --cells throughput,governor
    python bench/ray_scale.py --rows 6400 --governor-seconds 10 --callers 6 --rpm-seconds 60

One emulator (core 0; 200 ms latency, ``--count-by-second``) serves every run, reset before each.
Clients are real ``python -m batchrun run`` processes started on core 1 (``--client-cores``),
with ``--concurrency 64`` and no job file: the default job, streamed answers with thoughts.
``--engine ray`` starts its private Ray (GCS, raylet, workers) from that process, so the whole
Ray tree runs on the client core too; its temp dir is under the bench's work dir.

Cells:
  throughput  the same manifest (``--rows``) with the local engine, then ``--engine ray``
              (a private Ray started by the run) with 1 and 2 workers, then 2 workers with
              ``--rpm 60000`` (above the 640/s the emulator can give 2 x 64 at 200 ms: the
              rate binds nothing, but every request now needs a permit leased from the
              governor) and with ``--rpm 24000`` (400/s: the rate binds, as a user's quota
              does), then 2 workers on a running cluster (``ray start --head --block`` on the
              client cores, joined with ``--ray-address``; its processes' CPU counted from
              the run's start). Per run:
              - answers/s from the journal's first send to its last answer, against the ideal
                ``min(workers x 64 / 0.2 s, rpm / 60)`` and against the local engine's;
              - time to first request: from the process's start (just before exec) to the
                emulator's first request (its ``/_emulator/stats`` polled every 20 ms);
              - CPU per 1,000 requests (requests as the emulator counted them): user + system
                time of every process in the client's tree, sampled with psutil every 0.2 s
                (a process's last sample stands for it once it is gone), split as the driver
                (the ``batchrun run`` process), the dispatch workers (``ray::DispatchWorker``),
                the governor (``ray::GovernorService``) and the rest of Ray (GCS, raylet,
                agents, idle workers, log monitor); once over the whole life of the process
                (Ray's start and stop included) and once from the first request to the last
                answer (dispatch only);
              - the engine's own ``--json`` figures: lease calls and lease calls per second.
  governor    Ray in-process (``ray.init(address="local", num_cpus=2)``), the governor made
              by ``RayRuntime.governor`` (the engine's own code: ``num_cpus=0``,
              ``get_if_exists``, ``max_concurrency=1000``) with ``--rpm 10,000,000``, and
              ``--callers`` async caller actors, each with ``--in-flight`` calls awaiting
              ``lease`` back to back for ``--governor-seconds``: ``LeaseAsk(requests=16,
              answered=16)``. The governor's process is pinned alone on core 0, the callers
              on core 1. Lease calls served per second, per CPU-second of the governor, and
              per call latency; then against the lease calls/s the 2-worker runs of the
              throughput cell made: "one governor carries N such workers" (target >= 20 x
              what 2 workers need, i.e. 40 workers).
  rpm         ``--rpm 1200`` across 2 workers, rows for ``--rpm-seconds`` + 12 s: requests
              per minute the emulator received over the steady window (from 5 s after its
              first request, ``--rpm-seconds`` long), target within 2% of 1,200.
  cap         ``--max-credits`` set to 40% of what the manifest costs (the local run's bill,
              or a 256-row pilot; the default job with ``max_output_tokens_bound = 8192``,
              so that 2 x 64 requests fit under the cap, not 6), with the local engine (the
              baseline: it stops once the next request's reservation no longer fits) and
              across 2 Ray workers: the credits the emulator charged against the cap (never
              above) and against the local engine's, the exit code (4) and the rows answered.

``--quick`` shrinks everything (1,920 rows, 4 s of governor, a 20-s rpm window) to check the
script; its figures are not the targets'. A closing table lists the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from harness import (
    CLIENT_CORE,
    EMULATOR_CORE,
    ROOT,
    Emulator,
    emulator,
    journal_times,
    machine_note,
    pinned,
    stop,
    table,
    workdir,
    write_manifest,
)

sys.path.insert(0, str(ROOT))

LATENCY_MS = 200.0
CONCURRENCY = 64
API_KEY = "sk-bench-key-0000"
# Above 2 x 64 / 0.2 s = 640/s: binds nothing, but every request needs a leased permit.
HIGH_RPM = 60_000.0
# Below it (400/s): the rate binds, as a user's --rpm at their quota does.
BINDING_RPM = 24_000.0
# The cap cell's job: the default job, reserving 8,192 output tokens a request instead of the
# model's 65,536 (README "Cost and the budget"), so 2 x 64 requests fit under the cap at once.
CAP_JOB = "[job]\nmax_output_tokens_bound = 8192\n"
GLOBAL_RPM = 1200.0
CAP_SHARE = 0.4  # --max-credits as a share of the manifest's cost
GOVERNOR_RPM = 10_000_000.0
SAMPLE_S = 0.2
POLL_S = 0.02
CELLS = ("throughput", "governor", "rpm", "cap")
GROUPS = ("driver", "dispatch", "governor", "ray")


@dataclass
class Check:
    target: str
    figure: str
    holds: bool | None


def _yes(holds: bool | None) -> str:
    return "-" if holds is None else ("yes" if holds else "**no**")


# --- the client process and its tree ------------------------------------------------------------


class TreeSampler:
    """CPU (user + system) of a process and all its descendants, sampled in a thread; a
    process's last sample stands for it after it is gone. Grouped by what the process is."""

    def __init__(self, root: int, cluster: int | None = None) -> None:
        self.root = root
        self.roots = [root] if cluster is None else [root, cluster]
        self.last: dict[int, tuple[str, float]] = {}  # pid -> (group, cpu s)
        self.before: dict[int, float] = {}  # CPU of a running cluster's processes at start
        self.series: list[tuple[float, float]] = []  # (epoch s, total cpu s)
        self.alive_after: list[str] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> TreeSampler:
        if len(self.roots) > 1:  # what a running cluster spent before this run is not its
            self.sample()
            self.before = {pid: cpu for pid, (_, cpu) in self.last.items() if pid != self.root}
        self._thread.start()
        return self

    def _group(self, proc: psutil.Process) -> str:
        if proc.pid == self.root:
            return "driver"
        try:
            cmd = " ".join(proc.cmdline()[:1])
        except psutil.Error:
            return "ray"
        if cmd.startswith("ray::DispatchWorker"):
            return "dispatch"
        if cmd.startswith("ray::GovernorService"):
            return "governor"
        return "ray"

    def sample(self) -> float:
        with self._lock:
            for pid in self.roots:
                try:
                    root = self._procs.setdefault(pid, psutil.Process(pid))
                    for child in root.children(recursive=True):
                        self._procs.setdefault(child.pid, child)
                except psutil.Error:
                    pass
            for pid, proc in list(self._procs.items()):
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        group = self._group(proc)
                    # An idle worker becomes an actor; a dying one loses its command line.
                    known = self.last.get(pid, ("ray", 0.0))[0]
                    self.last[pid] = (group if known == "ray" else known,
                                      times.user + times.system)
                except psutil.Error:
                    self._procs.pop(pid, None)
            total = sum(cpu - self.before.get(pid, 0.0) for pid, (_, cpu) in self.last.items())
            self.series.append((time.time(), total))
            return total

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def finish(self, root_usage_cpu: float | None) -> None:
        """Stop; the root's own CPU from ``wait4`` replaces its last sample (it is exact)."""
        self._stop.set()
        self._thread.join()
        self.sample()
        if root_usage_cpu is not None:
            self.last[self.root] = ("driver", root_usage_cpu)
        for pid, proc in self._procs.items():
            if pid in self.before or pid in self.roots or not proc.is_running():
                continue
            # A running cluster keeps idle workers for the next job; a private Ray keeps none.
            if len(self.roots) == 1 or self.last.get(pid, ("ray", 0.0))[0] != "ray":
                with contextlib.suppress(psutil.Error):
                    self.alive_after.append(f"{pid} {' '.join(proc.cmdline()[:1])}")

    def by_group(self) -> dict[str, float]:
        groups = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, cpu) in self.last.items():
            groups[group] += cpu - self.before.get(pid, 0.0)
        return groups

    def at(self, moment: float) -> float:
        """Total CPU at the first sample taken at or after ``moment`` (epoch s)."""
        for when, total in self.series:
            if when >= moment:
                return total
        return self.series[-1][1] if self.series else 0.0


@dataclass
class RunFigures:
    label: str
    workers: int  # 1 for the local engine
    rpm: float | None
    rows: int
    ok: int
    exit_code: int
    wall_s: float
    first_request_s: float | None  # process start -> the emulator's first request
    first_send_s: float | None  # process start -> the journal's first send (client side)
    elapsed_s: float  # journal: first send -> last answer
    requests: int  # as the emulator counted them
    credits_billed: float
    cpu: dict[str, float]  # whole life, by group
    dispatch_cpu_s: float  # first request -> last answer, all groups
    engine: dict[str, Any] | None
    status: dict[str, Any]
    by_second: dict[int, int]
    leftovers: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ideal(self) -> float:
        limits = [self.workers * CONCURRENCY / (LATENCY_MS / 1000.0)]
        if self.rpm:
            limits.append(self.rpm / 60.0)
        return min(limits)

    def per_1k(self, cpu_s: float) -> float:
        return 1000.0 * cpu_s / self.requests if self.requests else float("nan")


def run_cli(label: str, manifest: Path, out: Path, emu: Emulator, work: Path, *extra: str,
            workers: int = 1, rpm: float | None = None, cores: str = CLIENT_CORE,
            cluster: int | None = None, timeout_s: float = 600.0) -> RunFigures:
    """One ``batchrun run`` process, its tree sampled, its first request timed."""
    emu.reset()
    argv = [sys.executable, "-m", "batchrun", "run", str(manifest), "--out", str(out),
            "--endpoint", emu.base_url, "--api-key", API_KEY, "--concurrency", str(CONCURRENCY),
            "--yes", "--quiet", "--json", *extra]
    if rpm:
        argv += ["--rpm", f"{rpm:g}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_TMPDIR"] = str(work / "r")  # the private Ray's sessions stay in the work dir
    if cluster is not None:
        # Ray 2.60 turns token auth on only for a cluster found with address "auto"; joining
        # one by HOST:PORT needs it said (the token is ~/.ray/auth_token, written by the head).
        env["RAY_AUTH_MODE"] = "token"
    (work / "r").mkdir(exist_ok=True)
    stdout_path, stderr_path = out.with_suffix(".stdout"), out.with_suffix(".stderr")
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        started = time.time()
        process = subprocess.Popen(pinned(cores, argv), cwd=ROOT, env=env, stdout=stdout,
                                   stderr=stderr)
        sampler = TreeSampler(process.pid, cluster).start()
        first_request: float | None = None
        deadline = time.monotonic() + timeout_s
        while True:  # reaped here (os.wait4: its rusage), never by Popen
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if first_request is None and emu.stats()["requests_total"] > 0:
                first_request = time.time() - started
                sampler.sample()
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(POLL_S if first_request is None else 0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall_s = time.time() - started
        exit_code = process.returncode
        sampler.finish(usage.ru_utime + usage.ru_stime)
    stats = emu.stats()
    text = stdout_path.read_text(errors="replace")
    try:
        report = orjson.loads(text[text.index("{"):text.rindex("}") + 1])
    except ValueError:
        tail = stderr_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{label}: no --json status (exit {exit_code}): {tail}") from None
    sent, done = journal_times(out)
    first_send = (sent[0] - started) if sent else None
    elapsed = (done[-1] - sent[0]) if sent and done else 0.0
    dispatch_cpu = 0.0
    if first_request is not None and done:
        dispatch_cpu = sampler.at(done[-1]) - sampler.at(started + first_request)
    return RunFigures(
        label=label, workers=workers, rpm=rpm, rows=report["rows_total"], ok=report["rows_ok"],
        exit_code=exit_code, wall_s=wall_s, first_request_s=first_request,
        first_send_s=first_send, elapsed_s=elapsed, requests=stats["requests_total"],
        credits_billed=float(stats["credits_billed"]), cpu=sampler.by_group(),
        dispatch_cpu_s=dispatch_cpu, engine=report.get("engine"), status=report,
        by_second={int(k): v for k, v in stats.get("requests_by_second", {}).items()},
        leftovers=sampler.alive_after)


def _print_run(run: RunFigures) -> None:
    engine = run.engine or {}
    print(f"  {run.label}: {run.ok:,}/{run.rows:,} ok, exit {run.exit_code}, wall "
          f"{run.wall_s:.1f} s, first request {_s(run.first_request_s)} s, {run.rate:,.0f} "
          f"answers/s, {run.requests:,} requests, CPU {sum(run.cpu.values()):.1f} s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in run.cpu.items())}), lease calls "
          f"{engine.get('lease_calls', '-')} ({engine.get('lease_calls_per_s', '-')}/s)"
          + (f"; LEFT RUNNING: {run.leftovers}" if run.leftovers else ""), flush=True)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@contextlib.contextmanager
def running_cluster(work: Path, cores: str) -> Iterator[tuple[int, str]]:
    """A Ray head started as users start one (``ray start --head``, here ``--block`` so that
    ending this one process stops its node: ``ray stop`` would stop every Ray on the machine),
    on the client cores; yields its pid and address."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (work / "c").mkdir(exist_ok=True)
    argv = pinned(cores, [str(Path(sys.executable).with_name("ray")), "start", "--head",
                          "--block", "--port", str(port), "--num-cpus", "2",
                          "--temp-dir", str(work / "c"), "--include-dashboard", "false",
                          "--disable-usage-stats"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    log = open(work / "cluster.log", "w+b")  # noqa: SIM115 - closed below
    process = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (work / "cluster.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ray start failed: "
                                   + (work / "cluster.log").read_text(errors="replace")[-1500:])
            time.sleep(0.2)
        yield process.pid, f"127.0.0.1:{port}"
    finally:
        stop(process, 60)
        log.close()


# --- throughput ---------------------------------------------------------------------------------


def cell_throughput(manifest: Path, emu: Emulator, work: Path, cores: str,
                    checks: list[Check]) -> list[RunFigures]:
    ray2 = ["--engine", "ray", "--workers", "2"]
    plans: list[tuple[str, list[str], int, float | None]] = [
        ("local", [], 1, None),
        ("ray, 1 worker", ["--engine", "ray", "--workers", "1"], 1, None),
        ("ray, 2 workers", ray2, 2, None),
        (f"ray, 2 workers, --rpm {HIGH_RPM:,.0f}", ray2, 2, HIGH_RPM),
        (f"ray, 2 workers, --rpm {BINDING_RPM:,.0f} (binds)", ray2, 2, BINDING_RPM),
    ]
    runs: list[RunFigures] = []
    for index, (label, extra, workers, rpm) in enumerate(plans):
        run = run_cli(label, manifest, work / f"out-t{index}", emu, work, *extra,
                      workers=workers, rpm=rpm, cores=cores)
        _print_run(run)
        runs.append(run)
    with running_cluster(work, cores) as (head, address):
        run = run_cli("ray, 2 workers, running cluster (--ray-address)", manifest,
                      work / "out-tc", emu, work, *ray2, "--ray-address", address, workers=2,
                      cores=cores, cluster=head)
        _print_run(run)
        runs.append(run)
    local = runs[0]
    header = ["engine", "rows ok", "ideal/s", "answers/s", "of ideal", "vs local",
              "first request s", "CPU-s/1k whole life", "driver", "dispatch workers",
              "governor", "rest of Ray", "CPU-s/1k dispatch only", "vs local (dispatch)",
              "lease calls/s", "lease calls/1k requests", "wall s"]
    lines = [header]
    for run in runs:
        engine = run.engine or {}
        total = sum(run.cpu.values())
        lines.append([
            run.label, f"{run.ok:,}", f"{run.ideal:,.0f}", f"{run.rate:,.0f}",
            f"{run.rate / run.ideal:.3f}", f"{run.rate / local.rate:.2f}",
            _s(run.first_request_s), f"{run.per_1k(total):.2f}",
            *(f"{run.per_1k(run.cpu[g]):.2f}" for g in GROUPS),
            f"{run.per_1k(run.dispatch_cpu_s):.2f}",
            f"{run.dispatch_cpu_s / local.dispatch_cpu_s * local.requests / run.requests:.2f}"
            if local.dispatch_cpu_s else "-",
            str(engine.get("lease_calls_per_s", "-")),
            f"{1000 * engine['lease_calls'] / run.requests:,.0f}" if engine else "-",
            f"{run.wall_s:.1f}"])
    print(table(lines), flush=True)
    for run in runs:
        checks.append(Check(f"throughput: {run.label}: every row ok, every row once",
                            f"{run.ok:,} of {run.rows:,}, {run.requests:,} requests",
                            run.ok == run.rows and run.requests == run.rows))
        if run.leftovers:
            checks.append(Check(f"{run.label}: no Ray process left after the run",
                                "; ".join(run.leftovers), False))
    return runs


# --- governor -----------------------------------------------------------------------------------


class Caller:
    """A stand-in for a dispatch worker's calls on the governor (a Ray actor)."""

    def pid(self) -> int:
        return os.getpid()

    async def hammer(self, governor: Any, name: str, start_at: float, seconds: float,
                     in_flight: int) -> tuple[int, list[float]]:
        from batchrun.cluster.messages import LeaseAsk

        while time.time() < start_at:
            await asyncio.sleep(min(0.05, max(0.0, start_at - time.time())))
        end = start_at + seconds
        latencies: list[float] = []

        async def loop() -> None:
            while time.time() < end:
                ask = LeaseAsk(name, requests=16, tokens_each=100, answered=16)
                began = time.perf_counter()
                await governor.lease.remote(ask)
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return len(latencies), latencies


def cell_governor(seconds: float, callers: int, in_flight: int, work: Path) -> dict[str, Any]:
    import ray

    from batchrun.cluster.ray_runtime import NAMESPACE, RayRuntime

    (work / "g").mkdir(exist_ok=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE,
             log_to_driver=False, _temp_dir=str(work / "g"))
    try:
        runtime = RayRuntime(ray, started_here=False, actors=[])
        governor = runtime.governor("bench", rpm=GOVERNOR_RPM, tpm=None, cap=None, spent=0.0)
        ray.get(governor.summary.remote())
        actor: Any = ray.remote(num_cpus=0)(Caller)
        handles = [actor.remote() for _ in range(callers)]
        caller_pids = ray.get([h.pid.remote() for h in handles])
        governor_proc = _find(lambda cmd: cmd.startswith("ray::GovernorService"))
        pinned_note = "not pinned"
        if governor_proc is not None and (os.cpu_count() or 1) > 1:
            governor_proc.cpu_affinity([int(EMULATOR_CORE)])
            for pid in caller_pids:
                psutil.Process(pid).cpu_affinity([int(CLIENT_CORE)])
            pinned_note = f"governor on core {EMULATOR_CORE}, callers on core {CLIENT_CORE}"
        before_asks = ray.get(governor.summary.remote())["asks"]
        start_at = time.time() + 1.0
        cpu_before = _cpu(governor_proc)
        futures = [h.hammer.remote(governor, f"bench-{n}", start_at, seconds, in_flight)
                   for n, h in enumerate(handles)]
        time.sleep(max(0.0, start_at - time.time()))
        cpu_start = _cpu(governor_proc)
        results = ray.get(futures)
        cpu_end = _cpu(governor_proc)
        summary = ray.get(governor.summary.remote())
        runtime.close()
    finally:
        ray.shutdown()
    calls = sum(n for n, _ in results)
    latencies = sorted(x for _, lat in results for x in lat)
    governor_cpu = (cpu_end - cpu_start) if cpu_start is not None and cpu_end is not None else None
    del cpu_before
    return {
        "calls": calls, "asks": summary["asks"] - before_asks, "seconds": seconds,
        "per_s": calls / seconds, "callers": callers, "in_flight": in_flight,
        "governor_cpu_s": governor_cpu,
        "per_cpu_s": calls / governor_cpu if governor_cpu else None,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "pinned": pinned_note,
    }


def _find(match: Any) -> psutil.Process | None:
    """A descendant of this process whose command line matches (Ray's workers set theirs)."""
    for _ in range(50):
        for proc in psutil.Process().children(recursive=True):
            try:
                if match(" ".join(proc.cmdline()[:1])):
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.1)
    return None


def _cpu(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    times = proc.cpu_times()
    return float(times.user + times.system)


def report_governor(figures: dict[str, Any], runs: list[RunFigures],
                    checks: list[Check]) -> None:
    lines = [["governor", "callers x in flight", "lease calls/s", "per governor CPU-s",
              "governor CPU share", "p50 ms", "p99 ms", "placement"]]
    cpu = figures["governor_cpu_s"]
    lines.append([f"{figures['seconds']:g} s, LeaseAsk(requests=16, answered=16)",
                  f"{figures['callers']} x {figures['in_flight']}", f"{figures['per_s']:,.0f}",
                  f"{figures['per_cpu_s']:,.0f}" if figures["per_cpu_s"] else "-",
                  f"{cpu / figures['seconds']:.2f}" if cpu is not None else "-",
                  f"{figures['p50_ms']:.2f}", f"{figures['p99_ms']:.2f}", figures["pinned"]])
    print(table(lines), flush=True)
    needs = [(run.label, float(run.engine["lease_calls_per_s"])) for run in runs
             if run.engine and run.workers == 2]
    if not needs:
        print("  (no 2-worker run to compare with: run the throughput cell too)")
        return
    lines = [["2 workers at 200 ms x 64", "their lease calls/s", "governor / need",
              "workers one governor carries"]]
    for label, need in needs:
        ratio = figures["per_s"] / need if need else float("inf")
        lines.append([label, f"{need:,.1f}", f"{ratio:,.0f}", f"{2 * ratio:,.0f}"])
        print(f"  {label}: one governor carries {2 * ratio:,.0f} such workers", flush=True)
    print(table(lines), flush=True)
    # The target is about what the workers need; a binding --rpm sets its own pace (below).
    label, need = max(((run.label, float(run.engine["lease_calls_per_s"])) for run in runs
                       if run.engine and run.workers == 2
                       and (run.rpm is None or run.rpm / 60.0 >= run.ideal * 0.999)),
                      key=lambda item: item[1])
    ratio = figures["per_s"] / need if need else float("inf")
    checks.append(Check("governor serves >= 20 x the lease calls of 2 workers at 200 ms x 64 "
                        f"(the larger need: {label})",
                        f"{figures['per_s']:,.0f} / {need:,.1f} = {ratio:,.0f} x "
                        f"({2 * ratio:,.0f} workers)", ratio >= 20))


# --- rpm and cap --------------------------------------------------------------------------------


def cell_rpm(window_s: float, emu: Emulator, work: Path, cores: str,
             checks: list[Check]) -> None:
    rows = int(GLOBAL_RPM / 60.0 * (window_s + 12))
    manifest = write_manifest(work / f"rpm-{rows}.jsonl", rows)
    run = run_cli(f"ray, 2 workers, --rpm {GLOBAL_RPM:g}", manifest, work / "out-rpm", emu,
                  work, "--engine", "ray", "--workers", "2", workers=2, rpm=GLOBAL_RPM,
                  cores=cores)
    _print_run(run)
    seconds = sorted(run.by_second)
    if not seconds:
        checks.append(Check("rpm 1200 across 2 workers", "no request", False))
        return
    start = seconds[0] + 5
    whole = int(window_s)
    window = [run.by_second.get(s, 0) for s in range(start, start + whole)]
    per_min = sum(window) * 60.0 / whole
    tens = [sum(window[i:i + 10]) * 6.0 for i in range(0, whole - 9, 10)]
    sent, _ = journal_times(work / "out-rpm")
    journal_rate = (len(sent) - 1) / (sent[-1] - sent[0]) * 60.0 if len(sent) > 1 else 0.0
    engine = run.engine or {}
    lines = [["rpm 1200, 2 workers", "rows", "window", "requests/min (emulator)", "vs 1200",
              "10-s windows /min (min-max)", "first sends/min (journal, whole run)",
              "lease calls/s", "rows ok"],
             [run.label, f"{rows:,}", f"{whole} s from 5 s after the first request",
              f"{per_min:,.1f}", f"{per_min / GLOBAL_RPM:.4f}",
              f"{min(tens):,.0f}-{max(tens):,.0f}" if tens else "-", f"{journal_rate:,.1f}",
              str(engine.get("lease_calls_per_s", "-")), f"{run.ok:,}"]]
    print(table(lines), flush=True)
    checks.append(Check(f"--rpm 1200 across 2 workers: within 2% over {whole} s "
                        "(emulator's count)", f"{per_min:,.1f}/min ({per_min / GLOBAL_RPM:.4f})",
                        abs(per_min / GLOBAL_RPM - 1.0) <= 0.02))
    checks.append(Check("--rpm 1200: every row ok", f"{run.ok:,} of {rows:,}",
                        run.ok == rows and run.requests == rows))


def cell_cap(manifest: Path, cost: float | None, emu: Emulator, work: Path, cores: str,
             checks: list[Check]) -> None:
    """The same cap with the local engine (the baseline: how close to the cap one machine
    gets before the next reservation no longer fits) and across 2 Ray workers."""
    with open(manifest, "rb") as handle:
        rows = sum(1 for _ in handle)
    job = work / "cap.toml"
    job.write_text(CAP_JOB, encoding="utf-8")
    if cost is None:  # a pilot of the first rows, as a local run
        pilot_rows = 256
        pilot = work / "pilot.jsonl"
        with open(manifest, "rb") as source, open(pilot, "wb") as target:
            for _, line in zip(range(pilot_rows), source, strict=False):
                target.write(line)
        run = run_cli("pilot (local)", pilot, work / "out-pilot", emu, work, cores=cores)
        cost = run.credits_billed * rows / pilot_rows
        print(f"  pilot: {run.credits_billed:.2f} credits for {pilot_rows} rows", flush=True)
    cap = round(CAP_SHARE * cost, 2)
    runs = []
    for index, (label, extra, workers) in enumerate([
            ("local", [], 1), ("ray, 2 workers", ["--engine", "ray", "--workers", "2"], 2)]):
        run = run_cli(f"{label}, --max-credits {cap:g}", manifest, work / f"out-cap{index}",
                      emu, work, *extra, "--job", str(job), "--max-credits", f"{cap:g}",
                      workers=workers,
                      cores=cores)
        _print_run(run)
        runs.append(run)
    lines = [["cap", "manifest cost", "cap", "emulator charged", "charged / cap",
              "vs local", "run reports", "rows ok", "requests", "stop", "exit"]]
    for run in runs:
        lines.append([run.label, f"{cost:,.2f}", f"{cap:,.2f}", f"{run.credits_billed:,.2f}",
                      f"{run.credits_billed / cap:.4f}",
                      f"{run.credits_billed / runs[0].credits_billed:.3f}"
                      if runs[0].credits_billed else "-",
                      f"{float(run.status.get('credits', 0.0)):,.2f}",
                      f"{run.ok:,} of {rows:,}", f"{run.requests:,}",
                      str(run.status.get("stop_reason")), str(run.exit_code)])
    print(table(lines), flush=True)
    local, ray = runs
    checks.append(Check("--max-credits across 2 workers: never passed (emulator's charges)",
                        f"{ray.credits_billed:,.2f} of {cap:,.2f} "
                        f"({ray.credits_billed / cap:.4f}), exit {ray.exit_code}",
                        ray.credits_billed <= cap + 1e-6 and ray.exit_code == 4))
    checks.append(Check("--max-credits (the bench's own check): 2 workers get as close to the cap "
                        "as the local engine (>= 0.9 x its charges)",
                        f"{ray.credits_billed:,.2f} vs {local.credits_billed:,.2f} "
                        f"({ray.credits_billed / local.credits_billed:.3f})"
                        if local.credits_billed else "-",
                        ray.credits_billed >= 0.9 * local.credits_billed))


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS),
                        help=f"comma-separated, of {', '.join(CELLS)}")
    parser.add_argument("--quick", action="store_true", help="small runs, to check the script")
    parser.add_argument("--rows", type=int, default=4800,
                        help="rows of the throughput manifest (7.5 s for 2 workers at the ideal)")
    parser.add_argument("--governor-seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=4, help="caller actors on the governor")
    parser.add_argument("--in-flight", type=int, default=4,
                        help="calls each caller keeps in flight (a worker has its permit call "
                             "and its news call)")
    parser.add_argument("--rpm-seconds", type=float, default=60.0,
                        help="the steady window of the --rpm 1200 cell")
    parser.add_argument("--client-cores", default=CLIENT_CORE,
                        help="taskset cores of the client process and its Ray")
    args = parser.parse_args()
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = set(cells) - set(CELLS)
    if unknown:
        parser.error(f"unknown cells: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rows, args.governor_seconds, args.rpm_seconds = 1920, 4.0, 20.0
    print(machine_note(), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; emulator on core {EMULATOR_CORE}, clients on cores "
          f"{args.client_cores}", flush=True)
    checks: list[Check] = []
    runs: list[RunFigures] = []
    started = time.monotonic()
    with workdir() as work:
        manifest = write_manifest(work / f"m-{args.rows}.jsonl", args.rows)
        with emulator("--latency-ms", f"{LATENCY_MS:g}", "--count-by-second") as emu:
            if "throughput" in cells:
                print("throughput:", flush=True)
                runs = cell_throughput(manifest, emu, work, args.client_cores, checks)
            if "rpm" in cells:
                print("rpm:", flush=True)
                cell_rpm(args.rpm_seconds, emu, work, args.client_cores, checks)
            if "cap" in cells:
                print("cap:", flush=True)
                cost = runs[0].credits_billed if runs else None
                cell_cap(manifest, cost, emu, work, args.client_cores, checks)
        if "governor" in cells:  # the emulator is gone: the governor has core 0 to itself
            print("governor:", flush=True)
            figures = cell_governor(args.governor_seconds, args.callers, args.in_flight, work)
            report_governor(figures, runs, checks)
    print(table([["target", "figure", "holds"],
                 *([c.target, c.figure, _yes(c.holds)] for c in checks)]), flush=True)
    print(f"{machine_note()}; bench took {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
