"""What a watching user sees: a live panel under a pseudo-terminal, plain lines otherwise."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from batchrun.cli.progress import progress_table
from batchrun.dispatch.progress import RunCounters
from batchrun.emulator.server import EmulatorServer

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _manifest(tmp_path: Path, rows: int, *, long_rows: int = 0) -> Path:
    """``rows`` prompts; the first ``long_rows`` say LONG (an emulator started with
    ``length_match="LONG"`` cuts their answers short: finish_reason length)."""
    path = tmp_path / "m.jsonl"
    path.write_text("".join(
        json.dumps({"id": f"r{n}", "prompt": f"q{n} LONG" if n < long_rows else f"q{n}"}) + "\n"
        for n in range(rows)))
    return path


def _command(manifest: Path, out: Path, server: EmulatorServer, *extra: str) -> list[str]:
    return [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
            "--endpoint", server.base_url, "--concurrency", "4", *extra]


def read_terminal(leader: int, process: subprocess.Popen[bytes]) -> str:
    """Everything the process wrote to its pseudo-terminal until it closed it, escape codes
    removed; the process has exited when this returns."""
    chunks: list[bytes] = []
    while select.select([leader], [], [], 60)[0]:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(leader)
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def _run_in_terminal(manifest: Path, out: Path, server: EmulatorServer) -> tuple[int, str]:
    """``batchrun run`` on a 120-column pseudo-terminal: its exit code and its screen."""
    leader, follower = pty.openpty()
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-progress-test", "COLUMNS": "120",
           "TERM": "xterm-256color"}
    process = subprocess.Popen(_command(manifest, out, server), env=env,
                               stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = read_terminal(leader, process)
    return process.returncode, screen


def test_progress_table_lists_every_figure() -> None:
    counters = RunCounters(rows_total=10, rows_ok=3, rows_failed=1, in_flight=2,
                           requests_sent=5, credits=0.5, estimate_credits=2.0, started_at=0.0)
    counters.note_error("upstream_error")
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(progress_table(counters, now=2.0))
    text = console.export_text()
    for label in ("rows", "in flight", "speed", "spent", "ETA", "errors", "recent"):
        assert label in text
    assert "4 / 10 done" in text and "25%" in text and "upstream_error" in text


def test_live_display_under_a_pseudo_terminal_ends_with_the_summary(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=60)
    manifest = _manifest(tmp_path, 80)
    returncode, screen = _run_in_terminal(manifest, tmp_path / "run", server)
    assert returncode == 0, screen
    assert "in flight" in screen and "ETA" in screen and "tokens/s" in screen
    assert screen.count("in flight") >= 2  # refreshed while running, not drawn once
    tail = screen[screen.rindex("in flight"):]
    assert "done: 80 ok" in tail  # the summary comes after the last frame


def test_non_tty_prints_periodic_plain_lines(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=100)
    manifest = _manifest(tmp_path, 60)
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-progress-test"}
    result = subprocess.run(_command(manifest, tmp_path / "run", server, "--progress-every",
                                     "0.3"), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # Each line starts with its local time: a log read the next morning says when.
    lines = [line for line in result.stderr.splitlines()
             if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d rows \d+/60", line)]
    assert len(lines) >= 3, result.stderr
    assert "\x1b[" not in result.stderr  # no terminal codes in a log file
    assert result.stdout == ""  # humans' text stays on stderr


def test_quiet_and_json(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = _manifest(tmp_path, 5)
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-progress-test"}
    result = subprocess.run(_command(manifest, tmp_path / "run", emulator, "--quiet", "--json"),
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stderr == ""
    assert json.loads(result.stdout)["rows_ok"] == 5


def test_the_panel_counts_incomplete_answers_by_finish_reason() -> None:
    counters = RunCounters(rows_total=20, rows_ok=14, started_at=0.0)
    for reason in ("stop", None, "length", "content_filter", "length"):
        counters.note_finish(reason)
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(progress_table(counters, now=2.0))
    text = console.export_text()
    assert "incomplete" in text and "length 2, content_filter 1" in text
    assert "incomplete: length 2, content_filter 1" in counters.line(now=2.0)
    finished = RunCounters(rows_total=3, rows_ok=3, started_at=0.0)
    finished.note_finish("stop")
    assert "incomplete" not in finished.line(now=1.0)
    console = Console(width=120, record=True)
    console.print(progress_table(finished, now=1.0))
    assert "incomplete" not in console.export_text()


def test_progress_lines_of_a_real_run_count_cut_answers(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    # The emulator cuts short (finish_reason length) every answer whose prompt says LONG.
    server = make_emulator(latency_ms=100, length_match="LONG")
    path = _manifest(tmp_path, 48, long_rows=6)
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-progress-test"}
    result = subprocess.run(_command(path, tmp_path / "run", server, "--progress-every", "0.2"),
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d rows \d+/48", line)]
    counted = [int(found[1]) for line in lines
               if (found := re.search(r"incomplete: length (\d+)", line))]
    assert counted, result.stderr  # the cut rows went first: later lines count them
    assert counted == sorted(counted) and 0 < counted[-1] <= 6, counted
    assert "content_filter" not in result.stderr
    assert "incomplete answers (ok, but not finished with stop): length ×6" in result.stderr


def test_the_live_panel_of_a_real_run_counts_cut_answers(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=60, length_match="LONG")
    path = _manifest(tmp_path, 40, long_rows=4)
    returncode, screen = _run_in_terminal(path, tmp_path / "run", server)
    assert returncode == 0, screen
    last_frame = screen[screen.rindex("in flight"):]
    assert "incomplete" in last_frame and "length 4 (ok, not ended by stop)" in last_frame
