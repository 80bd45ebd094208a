"""Media rows end to end: real files of every kind, over HTTP to the emulator, confined, bounded."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from support.media import SAMPLES, make_media

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer

KEY = "sk-test-media-0123456789"
ROOT = Path(__file__).resolve().parent.parent

# What the emulator must see for each sample file, by the MIME type batchrun sniffs.
EXPECTED_MIME = {
    "chart.png": "image/png",
    "photo.jpg": "image/jpeg",
    "report.pdf": "application/pdf",
    "tone.wav": "audio/wav",
    "silence.mp3": "audio/mp3",
    "clip.mp4": "video/mp4",
}


def run_cli(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, env={"BATCHRUN_API_KEY": KEY}, catch_exceptions=False)


def results(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pq.read_table(run_dir / "results.parquet").to_pylist()}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_job(path: Path, **fields: Any) -> Path:
    path.write_text("[job]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    return path


def held_open(folder: Path) -> list[str]:
    """Files under ``folder`` that this process holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{folder}/"):
            held.append(target)
    return held


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The checked-in media manifest beside freshly generated sample files."""
    folder = tmp_path / "corpus"
    make_media.write_all(folder / "media")
    shutil.copy(SAMPLES / "media.jsonl", folder / "media.jsonl")
    return folder


def test_checked_in_samples_are_what_the_script_makes(tmp_path: Path) -> None:
    written = make_media.write_all(tmp_path)
    assert sorted(written) == sorted(EXPECTED_MIME)
    for name, path in written.items():
        assert (SAMPLES / "media" / name).read_bytes() == path.read_bytes(), name


def test_mixed_manifest_runs_all_ok_and_the_emulator_sees_each_type(
    corpus: Path, emulator: EmulatorServer
) -> None:
    out = corpus / "run"
    result = run_cli(["run", str(corpus / "media.jsonl"), "--out", str(out),
                      "--endpoint", emulator.base_url, "--yes", "--json"])
    assert result.exit_code == 0, result.output
    rows = results(out)
    manifest = [json.loads(line) for line in (corpus / "media.jsonl").read_text().splitlines()]
    assert len(rows) == len(manifest) >= 7
    assert {row["status"] for row in rows.values()} == {"ok"}
    # Every file went out once per row naming it, whole, under the MIME type its content has.
    expected = sorted([
        *((EXPECTED_MIME[Path(ref).name], (corpus / ref).stat().st_size)
          for row in manifest for ref in row.get("media", [])),
        ("image/png", (corpus / "media/chart.png").stat().st_size),  # the messages row
    ])
    assert sorted(emulator.stats.media_seen) == expected
    assert {mime for mime, _ in emulator.stats.media_seen} == set(EXPECTED_MIME.values())
    # The hashes recorded are those of the bodies the emulator received (and billed once).
    assert sorted(emulator.stats.billed_by_body) == sorted(
        row["request_sha256"] for row in rows.values())
    assert set(emulator.stats.billed_by_body.values()) == {1}


def test_absolute_media_paths_inside_the_media_root_are_sent(
    corpus: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    # Finding 10: absolute paths were refused even inside --media-root; outside it they still
    # are, and such a file is never sent.
    media = corpus / "media"
    elsewhere = tmp_path / "elsewhere"  # the manifest's folder holds no media
    elsewhere.mkdir()
    manifest = write_rows(elsewhere / "rows.jsonl", [
        {"id": "png", "prompt": "Describe.", "media": [str(media / "chart.png")]},
        {"id": "pdf", "prompt": "Read.", "media": [str(media / "report.pdf")]},
        {"id": "in-messages", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe."},
            {"type": "image_url", "image_url": {"url": str(media / "photo.jpg")}}]}]},
    ])
    out = tmp_path / "run"
    refused = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                       "--yes", "--quiet"])  # the media root is the manifest's folder
    assert refused.exit_code == 1, refused.output
    assert emulator.stats.requests_total == 0
    root = elsewhere.resolve()
    for row in results(out).values():
        assert row["error_code"] == "media_error", row
        assert f"is outside the media root {root}; an absolute path" in row["error_message"]

    out = tmp_path / "run2"
    done = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                    "--media-root", str(media), "--yes", "--quiet"])
    assert done.exit_code == 0, done.output
    assert {row["status"] for row in results(out).values()} == {"ok"}
    assert sorted(emulator.stats.media_seen) == sorted(
        (EXPECTED_MIME[name], (media / name).stat().st_size)
        for name in ("chart.png", "report.pdf", "photo.jpg"))


def test_estimate_reads_pages_and_seconds_like_the_emulator_counts_them(
    corpus: Path, emulator: EmulatorServer
) -> None:
    estimate = run_cli(["estimate", str(corpus / "media.jsonl"), "--json"])
    assert estimate.exit_code == 0, estimate.output
    data = json.loads(estimate.output)
    assert data["rows"] == 8 and data["rows_unsendable"] == 0
    assert set(data["by_kind"]) == {"text", "image", "pdf", "audio", "video"}
    out = corpus / "run"
    assert run_cli(["run", str(corpus / "media.jsonl"), "--out", str(out), "--endpoint",
                    emulator.base_url, "--yes", "--quiet"]).exit_code == 0
    sent = sum(row["prompt_tokens"] for row in results(out).values())
    # Same rules, same metadata (3 pages, 1 s, 2.016 s, 2 s): the only gap is text tokenising.
    assert abs(data["prompt_tokens"] - sent) <= 0.02 * sent
    assert data["by_kind"]["pdf"]["tokens"] >= 3 * 560


# --------------------------------------------------------------------------- confinement

_OPENED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and args and isinstance(args[0], str | bytes):
        name = os.fsdecode(args[0])
        if "secret" in name:
            _OPENED.append(name)


sys.addaudithook(_audit)


@pytest.fixture
def opened_secrets() -> Iterator[list[str]]:
    _OPENED.clear()
    yield _OPENED
    _OPENED.clear()


def test_paths_escaping_the_media_root_are_row_errors_never_sent(
    tmp_path: Path, emulator: EmulatorServer, opened_secrets: list[str]
) -> None:
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    good = make_media.make_png()
    (root / "good.png").write_bytes(good)
    secret = make_media.make_png() + b"secret" * 1000  # a size nothing else has
    (tmp_path / "secret.png").write_bytes(secret)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "inner" / "up").symlink_to(tmp_path)
    manifest = write_rows(root / "rows.jsonl", [
        {"id": "good", "prompt": "Describe.", "media": ["good.png"]},
        {"id": "absolute", "prompt": "Describe.", "media": [str(tmp_path / "secret.png")]},
        {"id": "dotdot", "prompt": "Describe.", "media": ["inner/../../secret.png"]},
        {"id": "symlink", "prompt": "Describe.", "media": ["link.png"]},
        {"id": "symlinked-dir", "prompt": "Describe.", "media": ["inner/up/secret.png"]},
        {"id": "in-messages", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe."},
            {"type": "image_url", "image_url": {"url": "../secret.png"}}]}]},
        {"id": "text", "prompt": "Plain text still goes."},
    ])
    opened_secrets.clear()  # writing it above was the test's own doing
    estimate = run_cli(["estimate", str(manifest), "--json"])
    assert json.loads(estimate.output)["rows_unsendable"] == 5

    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                      "--yes", "--quiet"])
    assert result.exit_code == 1, result.output  # finished, some rows failed
    rows = results(out)
    assert rows["good"]["status"] == rows["text"]["status"] == "ok"
    messages = {
        "absolute": "is outside the media root",
        "dotdot": "resolves outside the media root",
        "symlink": "resolves outside the media root",
        "symlinked-dir": "resolves outside the media root",
        "in-messages": "resolves outside the media root",
    }
    for row_id, needle in messages.items():
        row = rows[row_id]
        assert row["status"] == "error" and row["error_code"] == "media_error", row
        assert needle in row["error_message"] and row["attempts"] == 0
    # The emulator got two requests and one file, the good one; the secret was never opened.
    assert emulator.stats.requests_total == 2
    assert emulator.stats.media_seen == [("image/png", len(good))]
    assert opened_secrets == []


def test_oversize_file_and_request_are_row_errors_naming_the_file(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    (tmp_path / "big.wav").write_bytes(make_media.make_wav(seconds=2.0))  # 32,044 bytes
    (tmp_path / "a.wav").write_bytes(make_media.make_wav(seconds=0.75))  # 12,044 bytes
    (tmp_path / "b.wav").write_bytes(make_media.make_wav(seconds=0.5))
    manifest = write_rows(tmp_path / "rows.jsonl", [
        {"id": "file-too-big", "prompt": "Transcribe.", "media": ["big.wav"]},
        {"id": "request-too-big", "prompt": "Transcribe.", "media": ["a.wav", "b.wav"]},
        {"id": "fits", "prompt": "Transcribe.", "media": ["b.wav"]},
    ])
    job = write_job(tmp_path / "job.toml", max_file_bytes=20_000, max_request_bytes=20_000)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", emulator.base_url, "--yes", "--quiet"])
    assert result.exit_code == 1, result.output
    rows = results(out)
    assert "'big.wav' is 32,044 bytes, over the 20,000-byte limit" in \
        rows["file-too-big"]["error_message"]
    message = rows["request-too-big"]["error_message"]
    assert "over the 20,000-byte per-request limit" in message
    assert "'a.wav'" in message and "'b.wav'" in message
    assert rows["fits"]["status"] == "ok"
    assert emulator.stats.requests_total == 1
    # A refused request's media files are closed with it (results.parquet, which this test
    # has just read, may stay open inside pyarrow for a moment: not the runner's doing).
    assert [path for path in held_open(tmp_path) if path.endswith(".wav")] == []


# --------------------------------------------------------------------------- byte budget

def test_budget_smaller_than_any_file_sends_them_one_at_a_time(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=40)
    media = make_media.write_all(tmp_path / "media")
    names = sorted(media)
    manifest = write_rows(tmp_path / "rows.jsonl", [
        {"id": f"r{i}", "prompt": f"Describe item {i}.", "media": [f"media/{names[i % 6]}"]}
        for i in range(12)
    ])
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
                      "--concurrency", "8", "--media-budget", "100", "--yes", "--quiet"])
    assert result.exit_code == 0, result.output  # larger than the budget: alone, not stuck
    assert server.stats.requests_total == 12
    assert server.stats.max_in_flight == 1


def test_budget_bounds_the_bodies_in_flight(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=60)
    payload = make_media.make_wav(seconds=3.0)  # 48 KB → a body of about 64 KB
    (tmp_path / "media").mkdir()
    rows = []
    for i in range(16):
        (tmp_path / "media" / f"{i}.wav").write_bytes(payload)
        rows.append({"id": f"r{i}", "prompt": f"Transcribe {i}.", "media": [f"media/{i}.wav"]})
    manifest = write_rows(tmp_path / "rows.jsonl", rows)
    body_size = len(base64.b64encode(payload))
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
                      "--concurrency", "16", "--media-budget", str(int(body_size * 3.5)),
                      "--yes", "--quiet"])
    assert result.exit_code == 0, result.output
    assert 2 <= server.stats.max_in_flight <= 3
    sizes = {size for _, size in server.stats.media_seen}
    assert sizes == {len(payload)} and len(server.stats.media_seen) == 16
    assert sorted(server.stats.billed_by_body) == sorted(
        row["request_sha256"] for row in results(out).values())
