"""Which HTTP stack: httpx over the aiohttp transport against bare aiohttp, in one run.

    python bench/http_stack.py [--requests 20000] [--concurrency 64] [--repeat 3]

Emulator at latency 0 on core 0, each client alone on core 1, runs interleaved. Prints the
CPU seconds per 1,000 requests of each and their ratio. batchrun itself no longer depends on
httpx: this comparison needs ``pip install httpx httpx-aiohttp`` in the venv.
"""

from __future__ import annotations

import argparse
import statistics

from harness import BENCH, emulator, machine_note, run_client, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine_note())
    rows = [["stack", "stream", "req/s (median)", "CPU-s / 1,000 req (median)", "vs aiohttp"]]
    with emulator("--latency-ms", "0") as emu:
        url = emu.base_url + "/chat/completions"
        for stream in (False, True):
            figures: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpx": []}
            for _ in range(args.repeat):
                for stack in figures:
                    argv = [str(BENCH / "client_http_stack.py"), stack, url, str(args.requests),
                            str(args.concurrency)] + (["stream"] if stream else [])
                    result = run_client(argv)
                    figures[stack].append((result.rate, result.cpu_per_1000))
            base_cpu = statistics.median(cpu for _, cpu in figures["aiohttp"])
            for stack, runs in figures.items():
                cpu = statistics.median(c for _, c in runs)
                rate = statistics.median(r for r, _ in runs)
                rows.append([stack, "yes" if stream else "no", f"{rate:,.0f}", f"{cpu:.3f}",
                             f"{cpu / base_cpu:.2f}x"])
    print(table(rows))
    print(machine_note())


if __name__ == "__main__":
    main()
