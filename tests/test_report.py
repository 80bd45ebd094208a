"""``batchrun report``: a page a team lead can forward (finding 8 of issue 16): a header with
model, endpoint, job, duration, estimate vs actual, retries, finish reasons and cost by kind;
full-width charts whose axes tick at round numbers in named units, also for tiny runs. The
report of a real run (over HTTP to the emulator) is rendered in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops
from support.kit import write_job

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.reader import manifest_fingerprint
from batchrun.reporting.axes import histogram, time_buckets, value_ticks
from batchrun.reporting.estimated import ManifestEstimate, estimate_manifest
from batchrun.reporting.report_charts import latency_chart
from batchrun.reporting.report_data import aggregate
from batchrun.reporting.report_html import render
from batchrun.reporting.run_facts import RunFacts, public_endpoint
from batchrun.reporting.svg import BAR_COLOUR, ESTIMATE_COLOUR, LINE_COLOUR
from batchrun.store.retries import CAUSE_NOT_RECORDED, fold_retries

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "sk-report-test-5d1e0c9a7b"
FACTS = RunFacts(run_dir="runs/t", job_name=None, model="gemini-3.1-pro",
                 endpoint="http://127.0.0.1:9/v1", manifest="/data/m.jsonl", rows_total=12,
                 expected_output_tokens=500, max_attempts=8, usd_per_credit=0.005,
                 running=False)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def tick_labels(html: str) -> list[tuple[list[str], list[str]]]:
    """(y tick labels, x tick labels) of each chart, in document order."""
    def labels(svg: str, axis: str) -> list[str]:
        return re.findall(rf'<text class="tick {axis}"[^>]*>([^<]*)</text>', svg)

    return [(labels(svg, "y"), labels(svg, "x"))
            for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


# --- axes ----------------------------------------------------------------------------------
@given(st.floats(min_value=1e-6, max_value=1e9), st.booleans())
def test_ticks_fall_on_round_numbers_and_cover_the_data(high: float, whole: bool) -> None:
    ticks = value_ticks(high, whole=whole)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
    assert ticks[0] == 0 and ticks[-1] >= high * (1 - 1e-9) and ticks[-2] < high
    assert len(ticks) <= 11 and (not whole or step >= 1)


def test_a_small_run_gets_a_few_round_bins_not_a_label_per_value() -> None:
    # Twelve latencies of a real 12-row run; the old chart labelled 24 log bins "23 25 27 …".
    latencies = [23.0, 25.4, 41.2, 41.5, 41.8, 42.0, 42.3, 42.6, 43.0, 50.2, 51.7, 55.1]
    bins = histogram(latencies)
    assert bins.edges == [20, 30, 40, 50, 60] and bins.counts == [2, 0, 7, 3] and not bins.log
    [(y_ticks, x_ticks)] = tick_labels(latency_chart(latencies))
    assert y_ticks == ["0", "2", "4", "6", "8"]  # whole rows, up to just past the 7 of a bin
    assert x_ticks == ["20 ms", "30 ms", "40 ms", "50 ms", "60 ms"]
    # 50 ms to 50 s: log bins on the 1-2-5 ladder, still round.
    wide = histogram([50.0, 120.0, 900.0, 4000.0, 50_000.0])
    assert wide.log and wide.edges[0] == 50 and wide.edges[-1] == 100_000
    assert all(edge / 10 ** math.floor(math.log10(edge)) in (1, 2, 5) for edge in wide.edges)


def test_latencies_close_together_get_labels_that_stay_apart() -> None:
    # Answers all read at the end of a 500-ms stream: bins of a fraction of a millisecond,
    # whose labels at three digits read "506 ms" twice.
    latencies = [505.2 + 0.1 * n for n in range(22)]
    bins = histogram(latencies)
    assert not bins.log and bins.edges[1] - bins.edges[0] < 1
    [(_, x_ticks)] = tick_labels(latency_chart(latencies))
    assert len(set(x_ticks)) == len(x_ticks) and x_ticks[0] == "505.0 ms", x_ticks


def test_a_rate_is_never_taken_over_less_than_a_second() -> None:
    # 12 rows that finish within 6 ms: the old report said 1,833 rows/s.
    lines = [{"id": f"r{n}", "status": "ok", "credits": 0.1, "attempts": 1,
              "latency_ms": 40.0 + n, "started_at": 1000.0, "finished_at": 1000.0 + n / 2000,
              "finish_reason": "stop"} for n in range(12)]
    buckets = time_buckets(1000.0, [(line["finished_at"], 0.1) for line in lines])
    assert buckets.bucket_s == 1.0 and buckets.rows == [12] and not buckets.chartable
    html = render(FACTS, aggregate(12, lines, {}), ManifestEstimate(note="no estimate: test"))
    rates = [float(value.replace(",", "")) for value in re.findall(r"([\d,.]+) rows/s", html)]
    assert rates == []  # no rate at all over 5.5 ms
    assert "12 rows<" in html and "in 5.5 ms" in html
    assert html.count("too short for a chart over time") == 2  # throughput and spend
    assert html.count("<svg") == 2  # latency and cost by kind still drawn


def test_without_the_manifest_the_report_says_why_and_shows_what_is_there(
    tmp_path: Path
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "prompt": "hello"}\n')
    info = {"manifest": str(manifest), "manifest_fingerprint": manifest_fingerprint(manifest),
            "job": {"expected_output_tokens": 300}}
    found = estimate_manifest(info)
    assert found.note is None and found.estimate is not None and found.kinds == {"a": "text"}
    assert found.estimate.rows_sendable == 1
    manifest.write_text('{"id": "a", "prompt": "hello again"}\n')
    changed = estimate_manifest(info)
    assert changed.estimate is None and changed.note == (
        f"no estimate: the manifest {manifest} has changed since the run began")
    manifest.unlink()
    assert estimate_manifest(info).note == f"no estimate: the manifest {manifest} is gone"
    lines = [{"id": "a", "status": "ok", "completion_tokens": 120, "attempts": 1,
              "started_at": 0.0, "finished_at": 1.0}]
    html = render(FACTS, aggregate(1, lines, {}), changed)
    assert f"no estimate: the manifest {manifest} has changed since the run began." in html
    assert ("<td class=\"\">output tokens per answered row</td><td class=\"num\">500 expected"
            "</td><td class=\"num\">120</td>") in html


# --- figures -------------------------------------------------------------------------------
def test_retries_are_counted_by_cause_with_the_time_they_cost() -> None:
    lines: list[dict[str, Any]] = [
        # a: both tries answered 503 in the first session, a resume sent it again.
        {"id": "a", "status": "error", "error_code": "upstream_error", "attempts": 2,
         "started_at": 0.0, "finished_at": 3.0, "retryable": True},
        # b: answered on its third try; its answering try took 1 s of its 5.
        {"id": "b", "status": "ok", "attempts": 3, "latency_ms": 1000.0, "credits": 0.5,
         "started_at": 10.0, "finished_at": 15.0, "finish_reason": "length"},
        # c: gave up after 8 tries of 429.
        {"id": "c", "status": "error", "error_code": "rate_limited", "attempts": 8,
         "started_at": 1.0, "finished_at": 31.0, "retryable": True},
        {"id": "a", "status": "ok", "attempts": 1, "latency_ms": 500.0, "credits": 0.25,
         "credits_computed": 9.0, "started_at": 40.0, "finished_at": 40.5,
         "finish_reason": "stop", "model": "gemini-3.1-pro-preview"},
        # d: reused from an earlier run: not paid here, not retried.
        {"id": "d", "status": "ok", "attempts": 0, "credits": 0.0, "reused_from": "/old",
         "started_at": 41.0, "finished_at": 41.0, "finish_reason": "stop"},
    ]
    data = aggregate(5, lines, {"a": "text", "b": "image"})
    assert {cause: (entry.retries, entry.rows, entry.seconds)
            for cause, entry in data.retries.items()} == {
        "upstream_error": (2, 1, 3.0), CAUSE_NOT_RECORDED: (2, 1, 4.0),
        "rate_limited": (7, 1, 30.0)}
    assert data.finish_reasons == {"stop": 2, "length": 1}
    assert (data.rows_ok, data.rows_failed, data.rows_pending, data.rows_reused) == (3, 1, 1, 1)
    assert data.credits == 0.75 and data.cost_by_kind == {"text": 0.25, "image": 0.5,
                                                          "unknown": 0.0}
    assert data.duration_s == 41.0 and data.answer_models == {"gemini-3.1-pro-preview": 1}


def test_retries_are_counted_by_the_causes_the_journal_recorded() -> None:
    lines: list[dict[str, Any]] = [
        # answered on its third try after a 503 and a 429; its answering try took 1 s of 4.
        {"id": "a", "status": "ok", "attempts": 3, "latency_ms": 1000.0, "credits": 0.5,
         "started_at": 0.0, "finished_at": 4.0, "finish_reason": "stop",
         "failed_attempts": ["503 upstream_error", "429 rate_limit_exceeded"]},
        # gave up after three tries: two retried (500, then 503), the last ended it.
        {"id": "b", "status": "error", "error_code": "upstream_error", "attempts": 3,
         "started_at": 0.0, "finished_at": 6.0, "retryable": True,
         "failed_attempts": ["500 internal_error", "503 upstream_error",
                             "503 upstream_error"]},
    ]
    data = aggregate(2, lines, {})
    assert {cause: (entry.retries, entry.rows, entry.seconds)
            for cause, entry in data.retries.items()} == {
        "503 upstream_error": (2, 2, 1.5 + 3.0), "429 rate_limit_exceeded": (1, 1, 1.5),
        "500 internal_error": (1, 1, 3.0)}
    assert CAUSE_NOT_RECORDED not in data.retries


def test_status_and_the_report_name_an_unrecorded_cause_alike() -> None:
    # Answered on its third try, written before the causes of failed tries were kept.
    line = {"id": "b", "status": "ok", "attempts": 3, "latency_ms": 1000.0, "credits": 0.5,
            "started_at": 10.0, "finished_at": 15.0, "finish_reason": "stop"}
    in_report = {cause: entry.retries for cause, entry in aggregate(1, [line], {}).retries.items()}
    assert in_report == dict(fold_retries([line]).by_cause) == {CAUSE_NOT_RECORDED: 2}


def test_the_endpoint_is_shown_without_credentials() -> None:
    assert public_endpoint("https://user:sk-secret@gw.example:8443/v1?key=sk-x#k") == \
        "https://gw.example:8443/v1"
    assert public_endpoint("http://[::1]:8787/v1") == "http://[::1]:8787/v1"


# --- a real run ----------------------------------------------------------------------------
def _manifest(path: Path) -> Path:
    rows: list[dict[str, Any]] = [{"id": f"q{n:02d}", "prompt": f"question {n} " * (n % 5 + 1)}
                                  for n in range(20)]
    rows += [{"custom_id": f"capped-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gemini-3.1-pro", "max_tokens": 3,
                       "messages": [{"role": "user", "content": "Tell a long story."}]}}
             for n in range(3)]
    rows.append({"id": "pic", "prompt": "Describe.", "media": ["https://example.com/a.png"]})
    rows.append({"id": "broken", "prompt": 5})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run(args: list[str]) -> int:
    return CliRunner().invoke(cli, args, env={"BATCHRUN_API_KEY": KEY}).exit_code


def test_a_run_without_a_job_file_is_not_titled_job(tmp_path: Path,
                                                    emulator: EmulatorServer) -> None:
    out = tmp_path / "run"
    assert _run(["run", str(_manifest(tmp_path / "m.jsonl")), "--out", str(out),
                 "--endpoint", emulator.base_url, "--quiet"]) == 1  # one broken row
    html = CliRunner().invoke(cli, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert html.exit_code == 0, html.output
    page = (tmp_path / "r.html").read_text()
    assert f"<h1>batchrun report: run {out}</h1>" in page
    assert "<dt>Job</dt><dd>no job file (the defaults and command-line flags)</dd>" in page
    assert "report: job" not in page


def test_report_header_and_axes_render_in_chromium(
    tmp_path: Path, make_emulator: Any
) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium for the report test (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    server: EmulatorServer = make_emulator(fail_503=1.0)
    job = write_job(tmp_path / "nightly.toml", name="nightly", max_attempts=2, concurrency=4,
                    max_retry_wait_s=0.01, breaker_first=0, breaker_window=0,
                    expected_output_tokens=300)
    manifest = _manifest(tmp_path / "m.jsonl")
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(job), "--out", str(out), "--endpoint",
            server.base_url, "--quiet"]
    assert _run(args) == 1  # every try answered 503: 24 rows to send again, 1 broken
    server.config.fail_503 = 0.0
    server.config.latency_ms = 500  # 24 rows, 4 at a time: over 3 s, enough for time charts
    assert _run(args) == 1  # resumed: all answered but the broken row
    report_path = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(out), "--output", str(report_path)])
    assert result.exit_code == 0, result.output
    html = report_path.read_text()
    # Self-contained: nothing to fetch (the SVG namespace is an identifier, not a fetch).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert KEY not in html

    facts = dict(re.findall(r"<dt>([^<]+)</dt><dd>(.*?)</dd>", html))
    assert facts["Job"] == "nightly" and "batchrun report: nightly</h1>" in html
    assert facts["Model"].startswith("gemini-3.1-pro")
    assert facts["Endpoint"] == server.base_url
    assert facts["Manifest"] == f"{manifest.resolve()} (25 rows)"
    assert re.fullmatch(r"\d+(\.\d+)? s \(first request to last row, all sessions\) · finished",
                        facts["Duration"])
    # Estimate vs actual: the estimate of the same manifest, next to what was paid.
    estimate = json.loads(CliRunner().invoke(
        cli, ["estimate", str(manifest), "--job", str(job), "--json"]).output)
    assert f"<td class=\"num\">{estimate['credits']['expected']:,.4f}</td>" in html
    assert "actual ÷ estimate" in html
    # Retries: each sendable row tried twice in the first session, then sent again.
    retries = re.search(r"<td class=\"\">upstream_error</td><td class=\"num\">(\d+)</td>"
                        r"<td class=\"num\">(\d+)</td><td class=\"num\">([^<]+)</td>", html)
    assert retries is not None and retries.groups()[:2] == ("48", "24"), html
    # Finish reasons: the three capped batch lines were cut at max_tokens.
    assert re.search(r"<td class=\"\">length</td><td class=\"num\">3</td>", html)
    assert re.search(r"<td class=\"\">stop</td><td class=\"num\">21</td>", html)
    # Cost by kind: text and the image row, each with its estimate.
    assert re.search(r"<td class=\"\">image</td><td class=\"num\">1</td>", html)
    assert re.search(r"<td class=\"\">text</td><td class=\"num\">23</td>", html)

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report_path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") == 4  # throughput, spend, latency, cost by kind
    assert dom.count('class="bar"') >= 6 and dom.count("<polyline") == 1
    charts = tick_labels(dom)
    throughput_x = charts[0][1]  # whole seconds since the first request
    assert throughput_x[0] == "0" and all(re.fullmatch(r"\d+ s", t) for t in throughput_x[1:])
    assert all(len(set(labels)) == len(labels) for chart in charts for labels in chart)

    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,3000", "--hide-scrollbars",
                    f"--screenshot={screenshot}", report_path.as_uri()],
                   capture_output=True, timeout=120, check=True, env={**os.environ})
    image = Image.open(screenshot).convert("RGB")
    counts = {colour: count for count, colour in image.getcolors(maxcolors=1_000_000) or []}
    assert counts.get(_rgb(BAR_COLOUR), 0) > 20_000  # full-width bars are drawn
    assert counts.get(_rgb(ESTIMATE_COLOUR), 0) > 2_000  # the estimate beside them
    assert counts.get(_rgb(LINE_COLOUR), 0) > 1_000  # and the spend line
    # Full width: the bars span most of a 1280 px page (they took half of it before).
    bars = ImageChops.difference(image, Image.new("RGB", image.size, _rgb(BAR_COLOUR)))
    left, _, right, _ = bars.convert("L").point(lambda v: 255 if v == 0 else 0).getbbox()
    assert right - left > 0.75 * image.width


def test_the_readme_shows_the_report_the_script_makes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    assert "](docs/report.png)" in (root / "README.md").read_text()
    spec = importlib.util.spec_from_file_location("make_screenshot",
                                                  root / "docs" / "make_screenshot.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with Image.open(root / "docs" / "report.png") as picture:
        assert picture.format == "PNG" and picture.width == script.WIDTH
        assert picture.height > 1500  # the whole page, cropped below the last table
    # The script's manifest: the sample rows five times over, media by absolute path, all
    # sendable under --media-root sample_inputs.
    manifest = script.write_manifest(tmp_path / "m.jsonl")
    lines = manifest.read_text().splitlines()
    assert len(lines) == 20 * script.ROUNDS
    assert str(root / "sample_inputs" / "media" / "chart.png") in manifest.read_text()
    estimate = CliRunner().invoke(cli, ["estimate", str(manifest), "--job",
                                        str(root / "jobs" / "sample.toml"), "--media-root",
                                        str(root / "sample_inputs"), "--json"])
    assert estimate.exit_code == 0, estimate.output
    found = json.loads(estimate.output)
    assert found["rows_unsendable"] == 0
    assert set(found["by_kind"]) == {"text", "image", "pdf", "audio", "video"}
