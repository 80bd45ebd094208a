"""The baseline client: bare aiohttp, N requests in flight, bodies built before the clock starts.

    python bench/client_baseline.py MANIFEST JOB ENDPOINT

It sends the very bytes batchrun would send (same request builder) and reads each answer
whole, nothing more: no parsing, limiting, retrying or recording. The last stdout line is a
JSON object (requests, ok, elapsed_s, cpu_s).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steady import steady_rate  # noqa: E402  (bench/ is the script's own folder)

from batchrun.manifest.job import load_job  # noqa: E402
from batchrun.manifest.reader import iter_rows  # noqa: E402
from batchrun.request.body import build_body, encode_body  # noqa: E402


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def hammer(url: str, bodies: list[bytes], concurrency: int,
                 stream: bool) -> tuple[int, int, float | None]:
    headers = {"Authorization": "Bearer sk-bench-key-0000", "Content-Type": "application/json",
               "Accept": "text/event-stream" if stream else "application/json"}
    queue = iter(bodies)
    counts = [0, 0]
    finished: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                counts[0] += 1
                counts[1] += response.status == 200
                finished.append(time.time())

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        first_sent = time.time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts[0], counts[1], steady_rate(finished, first_sent)


def main() -> None:
    manifest, job_path, endpoint = sys.argv[1:4]
    job = load_job(job_path)
    bodies = [encode_body(build_body(row, job, None))
              for row in iter_rows(Path(manifest), job, check_duplicates=False)]
    cpu_before = _cpu()
    started = time.perf_counter()
    requests, ok, steady = asyncio.run(hammer(endpoint.rstrip("/") + "/chat/completions", bodies,
                                      job.concurrency, job.stream))
    elapsed = time.perf_counter() - started
    cpu_s = _cpu() - cpu_before
    sys.stdout.write(orjson.dumps({"requests": requests, "ok": ok, "elapsed_s": elapsed,
                                   "cpu_s": cpu_s, "wall_s": elapsed,
                                   "steady_rate": steady}).decode() + "\n")


if __name__ == "__main__":
    main()
