"""``batchrun report``: a self-contained HTML file, rendered for real in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer
from batchrun.reporting.report import aggregate, latency_histogram, over_time, render
from batchrun.reporting.svg import BAR_COLOUR, LINE_COLOUR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _finished_run(tmp_path: Path, emulator: EmulatorServer) -> Path:
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": f"r{n}", "prompt": f"question {n} " * (n % 7 + 1)})
             for n in range(60)]
    lines += ['{"id": "broken", "prompt": 5}', '{"id": "also-broken"}']
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
              "--quiet"], env={"BATCHRUN_API_KEY": "sk-report-test"})
    assert result.exit_code == 1, result.output  # two bad rows
    return out


def test_aggregate_and_bins_are_pure() -> None:
    records = [
        {"id": "a", "status": "ok", "credits": 0.5, "prompt_tokens": 10, "completion_tokens": 5,
         "reasoning_tokens": 1, "latency_ms": 100.0, "finished_at": 10.0},
        {"id": "b", "status": "error", "credits": None, "error_code": "invalid_request",
         "error_message": "bad", "finished_at": 20.0},
    ]
    data = aggregate("t", 3, records, {"a": "image"})
    assert (data.rows_ok, data.rows_failed, data.rows_pending) == (1, 1, 1)
    assert data.cost_by_kind == {"image": 0.5, "unknown": 0.0}
    assert data.error_examples["invalid_request"] == [("b", "bad")]
    labels, counts = latency_histogram([10.0, 100.0, 1000.0, 1000.0])
    assert sum(counts) == 4 and len(labels) == len(counts)
    elapsed, rates, spend, unit = over_time([(0.0, 1.0), (30.0, 2.0), (60.0, 3.0)])
    assert unit == "seconds" and spend[-1] == 6.0 and sum(rates) * 1.5 == pytest.approx(3.0)
    html = render(data)
    assert "<svg" in html and "invalid_request" in html


def test_report_is_self_contained_and_renders_its_charts_in_chromium(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium for the report test (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    run_dir = _finished_run(tmp_path, emulator)
    report_path = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--output", str(report_path)])
    assert result.exit_code == 0, result.output
    html = report_path.read_text()
    # Self-contained: nothing to fetch (the SVG namespace is an identifier, not a fetch).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "row_error" in html and "prompt must be a string" in html

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report_path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") == 4
    assert dom.count('class="bar"') >= 2 and dom.count("<polyline") == 2

    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1400,1400",
                    f"--screenshot={screenshot}", report_path.as_uri()],
                   capture_output=True, timeout=120, check=True, env={**os.environ})
    image = Image.open(screenshot).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000) or []
    counts = {colour: count for count, colour in colours}
    assert counts.get(_rgb(BAR_COLOUR), 0) > 2000  # the bars are drawn
    assert counts.get(_rgb(LINE_COLOUR), 0) > 200  # and the lines
