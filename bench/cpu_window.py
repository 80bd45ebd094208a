"""CPU spent inside the dispatch window (first send to last answer), sampled in-process.

A client's whole-process CPU includes what comes before its first request (batchrun's estimate
pass and the lazy imports of ``run``) and after its last answer (results.parquet), which no
throughput figure covers. ``CpuSampler`` notes (wall time, process CPU) every 20 ms from a
thread; ``cpu_between`` reads the CPU spent between two wall times off those notes, so the
CPU per request of the window compares like with like against bare aiohttp, whose process
does nothing else. The sampler's own cost: ~50 wake-ups a second, a clock read each.
"""

from __future__ import annotations

import bisect
import threading
import time

INTERVAL_S = 0.02


class CpuSampler:
    """``with CpuSampler() as sampler:`` notes (time.time(), time.process_time()) pairs."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._note()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._note()

    def _note(self) -> None:
        self.walls.append(time.time())
        self.cpus.append(time.process_time())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._note()

    def cpu_at(self, wall: float) -> float:
        """Process CPU at wall time ``wall``, interpolated between the two notes around it."""
        index = bisect.bisect_right(self.walls, wall)
        if index <= 0:
            return self.cpus[0]
        if index >= len(self.walls):
            return self.cpus[-1]
        w0, w1 = self.walls[index - 1], self.walls[index]
        c0, c1 = self.cpus[index - 1], self.cpus[index]
        return c0 + (c1 - c0) * ((wall - w0) / (w1 - w0) if w1 > w0 else 0.0)

    def cpu_between(self, start: float, end: float) -> float:
        return self.cpu_at(end) - self.cpu_at(start)
