"""What happens before anything is spent: the estimate's contract, --confirm-above on a TTY and
off it, the balance check, and a paid calibration that must be asked for."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from support.kit import fast_job, results, run_cli, write_manifest

from batchrun.emulator.server import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent


def test_estimate_json_follows_the_contract_and_names_unsendable_rows(tmp_path: Path) -> None:
    samples = ROOT / "sample_inputs" / "media"
    for name, sample in (("a.png", "chart.png"), ("b.pdf", "report.pdf"),
                         ("c.wav", "tone.wav"), ("d.mp4", "clip.mp4")):
        shutil.copyfile(samples / sample, tmp_path / name)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "t", "prompt": "Explain tides."}\n'
        '{"id": "cjk", "prompt": "长城有多长?"}\n'
        '{"id": "img", "prompt": "Describe.", "media": ["a.png"]}\n'
        '{"id": "doc", "prompt": "Extract.", "media": ["b.pdf"]}\n'
        '{"id": "snd", "prompt": "Transcribe.", "media": ["c.wav"]}\n'
        '{"id": "vid", "prompt": "Summarise.", "media": ["d.mp4"]}\n'
        "{not json\n"
        '{"id": "empty"}\n'
    )
    result = run_cli(["estimate", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 8 and data["rows_unsendable"] == 2
    assert {(row["id"], row["line"]) for row in data["unsendable"]} == {("line-7", 7), ("empty", 8)}
    assert all(row["reason"] for row in data["unsendable"])
    for band in ("output_tokens", "credits", "usd"):
        assert data[band]["low"] < data[band]["expected"] < data[band]["high"]
    assert data["usd"]["expected"] == pytest.approx(data["credits"]["expected"] * 0.005, rel=1e-4)
    kinds = data["by_kind"]
    assert list(kinds) == ["text", "image", "pdf", "audio", "video"]
    assert all(kinds[kind]["rows"] == (2 if kind == "text" else 1) for kind in kinds)
    # Real files: counted from their pages, seconds and pixels (Gemini 3 rules).
    assert kinds["image"]["tokens"] > 1120 and kinds["pdf"]["tokens"] > 560
    assert all(kinds[kind]["tokens"] > 0 for kind in kinds)
    assert sum(k["tokens"] for k in kinds.values()) == data["prompt_tokens"]
    assert sum(k["credits"] for k in kinds.values()) == pytest.approx(data["credits"]["expected"])
    human = run_cli(["estimate", str(manifest)])
    # The table is the command's output: on stdout, so `> file` keeps it.
    assert "unsendable: line 8" in human.stdout and human.stderr == ""


def test_above_confirm_above_off_a_tty_it_refuses_without_yes(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 20)
    out = tmp_path / "run"
    base = ["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
            "--confirm-above", "1"]  # 20 rows x ~0.48 credits: above 1
    refused = run_cli(base)
    assert refused.exit_code == 2
    assert "--confirm-above" in refused.output and "--yes" in refused.output
    assert emulator.stats.requests_total == 0 and not out.exists()
    accepted = run_cli([*base, "--yes"])
    assert accepted.exit_code == 0, accepted.output
    assert emulator.stats.requests_total == 20


def _run_on_a_tty(args: list[str], answer: bytes, timeout_s: float = 60.0) -> tuple[int, str]:
    """Run ``batchrun`` with stdin/stdout/stderr on a pseudo-terminal; type ``answer`` when it
    asks. Returns the exit code and everything it printed."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BATCHRUN_API_KEY": "sk-test-tty"}
    process = subprocess.Popen([sys.executable, "-m", "batchrun.cli", *args], stdin=follower,
                               stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(leader, answer + b"\n")
                answered = True
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=10), seen.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)


@pytest.mark.parametrize(("answer", "exit_code", "requests"), [(b"n", 2, 0), (b"y", 0, 5)])
def test_above_confirm_above_on_a_tty_it_asks(
    tmp_path: Path, emulator: EmulatorServer, answer: bytes, exit_code: int, requests: int
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 5)
    code, screen = _run_on_a_tty(["run", str(manifest), "--out", str(tmp_path / "run"),
                                  "--endpoint", emulator.base_url, "--confirm-above", "0.5"],
                                 answer)
    assert "Spend about" in screen
    assert code == exit_code, screen
    assert emulator.stats.requests_total == requests
    if exit_code:
        assert "not confirmed; nothing was sent" in screen


def test_a_balance_below_the_estimate_warns_then_the_402_stops_the_run_resumably(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    # As DESIGN's contract has it for insufficient_credits: the run goes until the API's 402,
    # keeps every answer, exits 3 and says how to resume; nothing paid is sent twice.
    manifest = write_manifest(tmp_path / "m.jsonl", 40)
    server = make_emulator(balance=1.0)  # a few rows' worth (a row costs ~0.2 here)
    job = fast_job(tmp_path, expected_output_tokens=1000, concurrency=2)
    out = tmp_path / "run"
    base = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url, "--yes"]
    first = run_cli(base)
    assert first.exit_code == 3, first.output
    assert "balance (1.0000 credits) is below the estimate" in first.output
    assert "insufficient_credits" in first.output and "top up" in first.output
    ok_rows = [row for row in results(out) if row["status"] == "ok"]
    assert 0 < len(ok_rows) < 40 and len(ok_rows) == server.stats.billed_requests

    server.config.balance = 0.0  # spent: the first answers are 402s (not billed), the same stop
    billed = server.stats.billed_requests
    empty = run_cli([*base, "--json"])
    assert empty.exit_code == 3, empty.output
    assert "insufficient_credits" in empty.output and "top up" in empty.output
    assert f"batchrun run {manifest} --out {out}" in " ".join(empty.output.split())
    assert json.loads(empty.stdout)["rows_pending"] > 0
    assert server.stats.billed_requests == billed

    server.config.balance = 1_000.0
    done = run_cli(base)
    assert done.exit_code == 0, done.output
    assert "below the estimate" not in done.output
    assert all(row["status"] == "ok" for row in results(out)) and len(results(out)) == 40
    assert max(server.stats.billed_by_body.values()) == 1  # nobody paid twice


class CreditsDown:
    """In front of an emulator: ``GET /v1/credits`` drops the connection, completions pass
    through to the emulator (an aiohttp app on 127.0.0.1, in its own thread)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _credits(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with aiohttp.ClientSession() as session, session.post(
                self.upstream + "/chat/completions", data=body,
                headers={"Authorization": request.headers["Authorization"],
                         "Content-Type": "application/json"}) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/credits", self._credits)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_balance_that_cannot_be_read_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    front = CreditsDown(emulator.base_url)
    try:
        manifest = write_manifest(tmp_path / "m.jsonl", 5)
        job = fast_job(tmp_path, stream=False)
        result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(tmp_path / "run"),
                          "--endpoint", front.base_url, "--yes", "--json"])
    finally:
        front.stop()
    assert result.exit_code == 0, result.output
    assert "the balance could not be read (transport_error: GET /credits failed" in result.output
    assert json.loads(result.stdout)["rows_ok"] == 5
    assert emulator.stats.requests_total == 5


def test_a_key_refused_at_the_balance_stops_at_the_first_answer_with_json_and_the_resume(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    # The key is refused everywhere: the balance check only warns, the first completion's 401
    # stops the run the way every fatal answer does (exit 3, the summary, how to resume).
    server = make_emulator(revoke_after=0)
    manifest = write_manifest(tmp_path / "m.jsonl", 20)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=2)
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--yes", "--json"])
    assert result.exit_code == 3, result.output
    assert "the balance could not be read (401 invalid_api_key" in result.output
    assert f"batchrun run {manifest} --out {out}" in " ".join(result.output.split())
    summary = json.loads(result.stdout)
    assert summary["rows_pending"] >= 18 and summary["rows_ok"] == 0
    assert server.stats.billed_requests == 0


def test_a_paid_calibration_asks_and_needs_a_key(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 30)
    args = ["estimate", str(manifest), "--calibrate", "5", "--endpoint", emulator.base_url,
            "--out", str(tmp_path / "cal")]
    no_key = run_cli(args, key=None)
    assert no_key.exit_code == 2 and "BATCHRUN_API_KEY" in no_key.output
    unasked = run_cli(args)  # not a TTY and no --yes: it would spend money, so it refuses
    assert unasked.exit_code == 2 and "--yes" in unasked.output
    assert emulator.stats.requests_total == 0
    asked = run_cli([*args, "--yes", "--json"])
    assert asked.exit_code == 0, asked.output
    assert emulator.stats.requests_total == 5
    data = json.loads(asked.stdout)
    assert data["calibration"]["sent"] == 5 and data["rows"] == 30
    assert data["already_spent"]["rows"] == 5
    assert data["credits"]["low"] <= data["credits"]["expected"] <= data["credits"]["high"]


def test_run_calibrate_asks_for_the_sample_then_for_the_rest(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 30)
    out = tmp_path / "run"
    base = ["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
            "--calibrate", "2"]
    # The sample alone (2 rows, at most ~1.9 credits) is above the threshold: nothing is sent.
    too_low = run_cli([*base, "--confirm-above", "0.5"])
    assert too_low.exit_code == 2 and "the calibration sample" in too_low.output
    assert emulator.stats.requests_total == 0
    # The sample fits under it, the calibrated rest (28 rows, ~5.6 credits) does not: the
    # sample is sent and kept, the rest waits for a yes.
    rest = run_cli([*base, "--confirm-above", "3"])
    assert rest.exit_code == 2, rest.output
    assert f"the calibration sample is kept in {out}" in rest.output
    assert emulator.stats.requests_total == 2
    done = run_cli([*base, "--confirm-above", "3", "--yes"])
    assert done.exit_code == 0, done.output
    assert emulator.stats.requests_total == 30  # the sample was not sent twice


def test_estimate_calibrate_keeps_its_sample_where_the_printed_run_finds_it(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", 40)
    estimated = run_cli(["estimate", str(manifest), "--calibrate", "4", "--endpoint",
                         emulator.base_url, "--yes"])
    assert estimated.exit_code == 0, estimated.output
    command = estimated.stderr.split("without paying for them again:\n  ", 1)[1].split("\n")[0]
    args = command.split()
    run_dir = Path(args[args.index("--out") + 1])
    # Under ./runs (made absolute: the command works from any folder).
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("m-")
    assert emulator.stats.requests_total == 4
    ran = run_cli([*args[1:], "--yes"])
    assert ran.exit_code == 0, ran.output
    assert emulator.stats.requests_total == 40
    # Another job shapes other requests: its calibration does not reuse this sample's answers.
    job = tmp_path / "other.toml"
    job.write_text('[job]\nsystem = "Answer in French."\n')
    other = run_cli(["estimate", str(manifest), "--calibrate", "4", "--job", str(job),
                     "--endpoint", emulator.base_url, "--yes"])
    assert other.exit_code == 0, other.output
    assert emulator.stats.requests_total == 44


def test_estimate_names_both_lines_of_a_duplicate_id(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(f'{{"id": "r{n}", "prompt": "x"}}\n' for n in range(500))
                        + '{"id": "r17", "prompt": "again"}\n')
    result = run_cli(["estimate", str(manifest), "--json"])
    assert result.exit_code == 2
    assert "duplicate id 'r17' on lines 18 and 501" in result.output
