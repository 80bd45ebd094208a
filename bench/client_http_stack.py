"""One HTTP stack alone, as a bench client: N requests, ``concurrency`` in flight, bodies read.

    python bench/client_http_stack.py aiohttp|httpx URL REQUESTS CONCURRENCY [stream]

``httpx`` is httpx.AsyncClient over httpx_aiohttp.AiohttpTransport (what batchrun's client
used to be); ``aiohttp`` is a bare aiohttp.ClientSession. The last stdout line is JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import psutil


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _bodies(requests: int, stream: bool) -> list[bytes]:
    return [orjson.dumps({"model": "gemini-3.1-pro", "stream": stream, "include_thoughts": False,
                          "reasoning_effort": "low",
                          "messages": [{"role": "user", "content": f"question number {i}"}]})
            for i in range(requests)]


async def with_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> int:
    import aiohttp

    headers = {"Authorization": "Bearer sk-bench-key-0000", "Content-Type": "application/json"}
    queue = iter(bodies)
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok += response.status == 200

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


async def with_httpx(url: str, bodies: list[bytes], concurrency: int) -> int:
    import aiohttp
    import httpx
    from httpx_aiohttp import AiohttpTransport

    headers = {"Authorization": "Bearer sk-bench-key-0000", "Content-Type": "application/json"}
    queue = iter(bodies)
    ok = 0

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ok
        for body in queue:
            response = await client.post(url, content=body, headers=headers)
            ok += response.status_code == 200

    async with httpx.AsyncClient(transport=AiohttpTransport(client=session),
                                 timeout=httpx.Timeout(300, pool=None)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return ok


def main() -> None:
    stack, url, requests, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    stream = len(sys.argv) > 5 and sys.argv[5] == "stream"
    bodies = _bodies(requests, stream)
    send = with_aiohttp if stack == "aiohttp" else with_httpx
    cpu_before = _cpu()
    started = time.perf_counter()
    ok = asyncio.run(send(url, bodies, concurrency))
    elapsed = time.perf_counter() - started
    sys.stdout.write(orjson.dumps({"requests": requests, "ok": ok, "elapsed_s": elapsed,
                                   "cpu_s": _cpu() - cpu_before}).decode() + "\n")


if __name__ == "__main__":
    main()
