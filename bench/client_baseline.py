"""The baseline client: bare aiohttp, N requests in flight, bodies built before the clock starts.

    python bench/client_baseline.py MANIFEST JOB ENDPOINT

It sends the very bytes batchrun would send (same request builder) on the same event loop
(uvloop when batchrun would use it; ``BATCHRUN_EVENT_LOOP=asyncio`` for asyncio's) and the
same collector settings (``eventloop.lean_collector``; ``BENCH_BASELINE_GC=default`` leaves
CPython's defaults), and does
the least an honest client must do with each answer: a JSON answer is read whole; a stream is
read as it arrives, each event's ``data:`` JSON parsed, and content, reasoning and usage
collected. No limiting, retrying, recording or error mapping. The last stdout line is a JSON
object (requests, ok, elapsed_s, cpu_s, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpu_window import CpuSampler  # noqa: E402  (bench/ is the script's own folder)
from steady import steady_rate  # noqa: E402

from batchrun.dispatch.eventloop import lean_collector, loop_factory  # noqa: E402
from batchrun.manifest.job import load_job  # noqa: E402
from batchrun.manifest.reader import iter_rows  # noqa: E402
from batchrun.request.body import build_body, encode_body  # noqa: E402


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def read_stream(response: aiohttp.ClientResponse) -> tuple[str, str, Any]:
    """(content, reasoning, usage) of an event stream: lines split as they come, each
    ``data:`` line's JSON parsed, the deltas joined, the last usage kept."""
    content: list[str] = []
    reasoning: list[str] = []
    usage: Any = None
    rest = b""
    async for data in response.content.iter_any():
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank line between events, ":" comment
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            chunk = orjson.loads(payload)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if text:
                    content.append(text)
                thought = delta.get("reasoning_content")
                if thought:
                    reasoning.append(thought)
    return "".join(content), "".join(reasoning), usage


async def hammer(url: str, bodies: list[bytes], concurrency: int, stream: bool,
                 window: list[float]) -> tuple[int, int, float | None, int]:
    """Send every body; ``window`` gets the first send's and the last answer's wall times."""
    headers = {"Authorization": "Bearer sk-bench-key-0000", "Content-Type": "application/json",
               "Accept": "text/event-stream" if stream else "application/json"}
    queue = iter(bodies)
    counts = [0, 0, 0]  # answers, status 200, streams that ended with usage
    finished: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                if stream and response.status == 200:
                    _, _, usage = await read_stream(response)
                    counts[2] += usage is not None
                else:
                    await response.read()
                counts[0] += 1
                counts[1] += response.status == 200
                finished.append(time.time())

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        first_sent = time.time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    window[:] = [first_sent, max(finished, default=first_sent)]
    return counts[0], counts[1], steady_rate(finished, first_sent), counts[2]


def main() -> None:
    manifest, job_path, endpoint = sys.argv[1:4]
    job = load_job(job_path)
    bodies = [encode_body(build_body(row, job, None))
              for row in iter_rows(Path(manifest), job, check_duplicates=False)]
    factory = loop_factory()
    lean = os.environ.get("BENCH_BASELINE_GC", "lean") != "default"
    # The collector is set up before the clock starts, as batchrun's is before its dispatch.
    collector = lean_collector() if lean else contextlib.nullcontext()
    with collector:
        cpu_before = _cpu()
        started = time.perf_counter()
        window: list[float] = []
        with CpuSampler() as sampler, asyncio.Runner(loop_factory=factory) as runner:
            requests, ok, steady, with_usage = runner.run(hammer(
                endpoint.rstrip("/") + "/chat/completions", bodies, job.concurrency,
                job.stream, window))
        elapsed = time.perf_counter() - started
        cpu_s = _cpu() - cpu_before
    sys.stdout.write(orjson.dumps({"requests": requests, "ok": ok, "elapsed_s": elapsed,
                                   "cpu_s": cpu_s, "wall_s": elapsed,
                                   "dispatch_cpu_s": sampler.cpu_between(*window),
                                   "steady_rate": steady, "streams_with_usage": with_usage,
                                   "loop": "uvloop" if factory else "asyncio",
                                   "gc": "lean" if lean else "default"}).decode() + "\n")


if __name__ == "__main__":
    main()
