"""Peak memory of a media run against the byte budget: 200 rows × 20 MB at concurrency 32.

    python bench/media_memory.py [--rows 200] [--file-mb 20] [--concurrency 32]
                                 [--budget-mb 256] [--latency-ms 200]

Starts the emulator as a subprocess, writes one 20 MB WAV file in a temp folder and links it
under a name per row (rows differ by their prompt, so every request body is different), runs
``batchrun run`` as a subprocess and reads that process's peak RSS from the kernel
(``wait4``'s ru_maxrss). A text-only run of the same number of rows, measured the same way in
the same invocation, is the baseline: what the interpreter, pyarrow, aiohttp … cost anyway.
The goal (issue 3): peak RSS < budget + 150 MB. Exit status 1 if the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
MIB = 1024 * 1024


def write_wav(path: Path, nbytes: int) -> None:
    """A mono 16-bit 48 kHz WAV whose data chunk is about ``nbytes`` of varied samples."""
    frames = nbytes // 2
    pattern = bytes((i * 37 + (i >> 8)) & 0xFF for i in range(1 << 16))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        written = 0
        while written < frames:
            block = pattern[: min(len(pattern), (frames - written) * 2)]
            out.writeframes(block)
            written += len(block) // 2


def make_corpus(folder: Path, rows: int, file_bytes: int, with_media: bool) -> Path:
    manifest = folder / ("media.jsonl" if with_media else "text.jsonl")
    media = folder / "media"
    if with_media:
        media.mkdir(exist_ok=True)
        source = media / "source.wav"
        write_wav(source, file_bytes)
        for index in range(rows):
            os.link(source, media / f"clip-{index:04d}.wav")  # 200 names, one file on disk
    with manifest.open("wb") as out:
        for index in range(rows):
            row: dict[str, object] = {"id": f"r{index}",
                                      "prompt": f"Transcribe recording number {index}."}
            if with_media:
                row["media"] = [f"media/clip-{index:04d}.wav"]
            out.write(orjson.dumps(row) + b"\n")
    return manifest


def run_batchrun(manifest: Path, out: Path, endpoint: str, concurrency: int,
                 budget: int) -> tuple[int, float, float, float]:
    """(exit code, peak RSS in bytes, seconds, CPU seconds) of one ``batchrun run``."""
    command = [
        sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
        "--endpoint", endpoint, "--api-key", "sk-bench-media-memory",
        "--concurrency", str(concurrency), "--media-budget", str(budget), "--yes", "--quiet",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    cpu = usage.ru_utime + usage.ru_stime
    return process.returncode, usage.ru_maxrss * 1024.0, elapsed, cpu  # ru_maxrss: KiB (Linux)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--file-mb", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--budget-mb", type=float, default=256.0,
                        help="--media-budget in MiB [the job default, 256]")
    parser.add_argument("--latency-ms", type=float, default=200.0,
                        help="emulator latency, so that requests stay in flight")
    args = parser.parse_args()
    budget = int(args.budget_mb * MIB)
    file_bytes = int(args.file_mb * MB)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 256

    emulator = subprocess.Popen(
        [sys.executable, "-m", "batchrun.emulator", "--port", "0",
         "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert emulator.stdout is not None
        endpoint = emulator.stdout.readline().strip().rsplit(" ", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="batchrun-media-bench-") as tmp:
            folder = Path(tmp)
            text_manifest = make_corpus(folder, args.rows, file_bytes, with_media=False)
            media_manifest = make_corpus(folder, args.rows, file_bytes, with_media=True)
            code_t, base_rss, base_s, _ = run_batchrun(text_manifest, folder / "run-text",
                                                    endpoint, args.concurrency, budget)
            code_m, peak_rss, media_s, media_cpu = run_batchrun(
                media_manifest, folder / "run-media", endpoint, args.concurrency, budget)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

    limit = budget + 150 * MB
    corpus = args.rows * file_bytes
    print(f"{args.rows} rows × {file_bytes / MB:g} MB ({corpus / MB:,.0f} MB of media, "
          f"{corpus * 4 / 3 / MB:,.0f} MB as base64) at concurrency {args.concurrency}, "
          f"budget {budget / MB:,.0f} MB")
    print(f"baseline (text rows): peak RSS {base_rss / MB:,.0f} MB, {base_s:.1f} s, exit {code_t}")
    print(f"media rows:           peak RSS {peak_rss / MB:,.0f} MB, {media_s:.1f} s, "
          f"exit {code_m}, {corpus / MB / media_s:,.0f} MB/s of media, "
          f"batchrun CPU {media_cpu:.1f} s")
    print(f"peak RSS / (budget + 150 MB) = {peak_rss / limit:.2f}  "
          f"(peak - baseline = {(peak_rss - base_rss) / MB:,.0f} MB for a "
          f"{budget / MB:,.0f} MB budget)")
    ok = peak_rss < limit and code_m == 0 and code_t == 0
    print("goal met: peak RSS < budget + 150 MB" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
