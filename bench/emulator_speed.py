"""How many requests/s the emulator answers: a subprocess emulator, concurrent aiohttp clients.

    python bench/emulator_speed.py [--requests 20000] [--concurrency 64] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp
import orjson


async def hammer(url: str, requests: int, concurrency: int, stream: bool) -> tuple[float, int]:
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    bodies = [
        orjson.dumps({"model": "gemini-3.1-pro", "stream": stream,
                      "messages": [{"role": "user", "content": f"question number {i}"}]})
        for i in range(requests)
    ]
    ok = 0
    queue = iter(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for body in queue:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok += response.status == 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "batchrun.emulator", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip().rsplit(" ", 1)[-1]
        elapsed, ok = asyncio.run(
            hammer(base + "/chat/completions", args.requests, args.concurrency, args.stream)
        )
        mode = "stream" if args.stream else "json"
        print(f"{args.requests} requests ({mode}, {args.concurrency} concurrent): "
              f"{args.requests / elapsed:,.0f} req/s, {ok} ok")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
