"""Every fault the wire and the gateway can throw at a run, against the real emulator.

One test per fault mode (the name says which), each asserting what a user sees: the rows'
state, the exit code and the message. "Sometimes" variants check that retries absorb the fault
and no paid answer is lost; "always" variants check the row error a user would read.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from support.kit import KEY, by_id, journal, run_cli, write_job, write_manifest

from batchrun.api.client import ApiClient, ClientSettings
from batchrun.core import errors
from batchrun.emulator.command import emulator_command
from batchrun.emulator.server import EmulatorServer

MakeEmulator = Callable[..., EmulatorServer]


def run_against(server: EmulatorServer, tmp_path: Path, rows: int, *extra: str,
                out: str = "run", **job: Any) -> tuple[Any, Path]:
    manifest = tmp_path / "m.jsonl"
    if not manifest.exists():
        write_manifest(manifest, rows)
    job_file = write_job(tmp_path / "job.toml", **job)
    run_dir = tmp_path / out
    result = run_cli(["run", str(manifest), "--job", str(job_file), "--out", str(run_dir),
                      "--endpoint", server.base_url, "--ignore-balance", *extra])
    return result, run_dir


def assert_all_ok_and_nothing_paid_lost(server: EmulatorServer, run_dir: Path, rows: int,
                                        lost_in_transit: int = 0) -> None:
    """Every row ok once; every billed answer is a recorded row or a fault the emulator
    counted as cut in transit (the client never received it whole)."""
    recorded = by_id(run_dir)
    assert len(recorded) == rows and all(row["status"] == "ok" for row in recorded.values())
    billed = server.stats.billed_by_body
    assert {row["request_sha256"] for row in recorded.values()} <= set(billed)
    assert sum(billed.values()) == rows + lost_in_transit
    # Every request the emulator saw is an attempt some journal line accounts for.
    assert sum(line["attempts"] for line in journal(run_dir)) == server.stats.requests_total


# ---------------------------------------------------------------- resets


def test_fault_connection_reset_before_answer(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(drop_rate=0.3, drop_mode="reset", seed=1)
    result, run_dir = run_against(server, tmp_path, 40, concurrency=8)
    assert result.exit_code == 0, result.output
    assert server.stats.faults["reset"] > 0
    # A reset before any byte is not billed: exactly one paid answer per row.
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 40)


def test_fault_connection_reset_before_answer_every_time(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(drop_rate=1.0, drop_mode="reset")
    result, run_dir = run_against(server, tmp_path, 4, max_attempts=3)
    assert result.exit_code == 1, result.output
    rows = by_id(run_dir)
    for row in rows.values():
        assert row["status"] == "error" and row["error_code"] == "transport_error"
        assert row["attempts"] == 3 and "server disconnected" in row["error_message"]
    assert server.stats.billed_requests == 0
    # Retryable: a plain resume sends them again once the network is back.
    server.config.drop_rate = 0.0
    again, _ = run_against(server, tmp_path, 4)
    assert again.exit_code == 0, again.output
    assert all(row["status"] == "ok" for row in by_id(run_dir).values())


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_fault_connection_reset_during_answer(
    tmp_path: Path, make_emulator: MakeEmulator, stream: bool
) -> None:
    server = make_emulator(drop_rate=0.3, drop_mode="truncate", seed=2)
    result, run_dir = run_against(server, tmp_path, 40, stream=stream)
    assert result.exit_code == 0, result.output
    cut = server.stats.faults["truncate"]
    assert cut > 0
    # Billed when the answer started: the cut ones are paid but lost in transit, and retried.
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 40, lost_in_transit=cut)


def test_fault_connection_reset_during_answer_every_time(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(drop_rate=1.0, drop_mode="truncate")
    result, run_dir = run_against(server, tmp_path, 3, max_attempts=2, stream=True)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "error" and row["error_code"] == "transport_error"
        assert "body cut off" in row["error_message"] or "before [DONE]" in row["error_message"]
        assert row["prompt_tokens"] is None  # nothing half-parsed is kept as an answer
    assert server.stats.billed_requests == 6  # paid and lost: reported, not hidden


# ---------------------------------------------------------------- stalls and timeouts


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_fault_stream_stalls_midway(
    tmp_path: Path, make_emulator: MakeEmulator, stream: bool
) -> None:
    server = make_emulator(stall_rate=0.25, stall_s=1.5, seed=3)
    result, run_dir = run_against(server, tmp_path, 24, "--read-timeout", "0.3", stream=stream)
    assert result.exit_code == 0, result.output
    stalls = server.stats.faults["stall"]
    assert stalls > 0
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 24, lost_in_transit=stalls)
    assert max(row["attempts"] for row in by_id(run_dir).values()) > 1


def test_fault_stream_stalls_every_time_is_a_read_timeout_row_error(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(stall_rate=1.0, stall_s=2.0)
    result, run_dir = run_against(server, tmp_path, 2, max_attempts=2, read_timeout_s=0.3)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "error" and row["error_code"] == "transport_error"
        assert "read timed out: no data for 0.3s" in row["error_message"]
        assert row["attempts"] == 2


def test_fault_whole_request_timeout_cuts_a_trickling_stream(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    # Every event comes well within the read timeout, the whole answer does not.
    server = make_emulator(chunk_delay_ms=150)
    result, run_dir = run_against(server, tmp_path, 3, "--request-timeout", "0.4",
                                  max_attempts=2, read_timeout_s=5.0)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["error_code"] == "transport_error" and row["attempts"] == 2
        assert "no complete answer within 0.4s" in row["error_message"]
    assert "--request-timeout 0.4" in result.output  # kept in the resume command
    again, _ = run_against(server, tmp_path, 3, "--request-timeout", "30")
    assert again.exit_code == 0, again.output


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: new connections hang in SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.settimeout(0.2)
        with contextlib.suppress(OSError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel accepts beyond the backlog: no way to make a connect hang")
    except TimeoutError:
        pass
    finally:
        probe.close()
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


def test_fault_connect_timeout_is_configurable(full_backlog: int) -> None:
    settings = ClientSettings(endpoint=f"http://127.0.0.1:{full_backlog}/v1", api_key=KEY,
                              connect_timeout_s=0.3)

    async def main() -> errors.BatchrunError:
        async with ApiClient(settings) as client:
            with anyio.fail_after(5):
                try:
                    await client.complete(b"{}", stream=False)
                except errors.BatchrunError as error:
                    return error
        raise AssertionError("a connect that hangs must time out")

    error = anyio.run(main)
    assert isinstance(error, errors.TransportError)
    assert "connect timed out after 0.3s" in error.message


# ---------------------------------------------------------------- answers that are not answers


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_fault_truncated_sse_without_done(
    tmp_path: Path, make_emulator: MakeEmulator, stream: bool
) -> None:
    server = make_emulator(early_eof_rate=0.3, seed=4)
    result, run_dir = run_against(server, tmp_path, 30, stream=stream)
    assert result.exit_code == 0, result.output
    ended_early = server.stats.faults["early_eof"]
    assert ended_early > 0
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 30, lost_in_transit=ended_early)


def test_fault_truncated_sse_without_done_every_time(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(early_eof_rate=1.0)
    result, run_dir = run_against(server, tmp_path, 2, max_attempts=2, stream=True)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "error" and row["error_code"] == "transport_error"
        assert "stream ended before [DONE]" in row["error_message"]
        assert "usage missing" in row["error_message"] and "truncated" in row["error_message"]


def test_fault_200_body_not_json(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(not_json_rate=1.0)
    result, run_dir = run_against(server, tmp_path, 2, max_attempts=2)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "error" and row["error_code"] == "transport_error"
        message = row["error_message"]
        assert "HTTP 200" in message and "HTML page" in message and "Just a moment" in message
        assert "<html" not in message.lower()
    assert server.stats.billed_requests == 0
    server.config.not_json_rate = 0.3
    again, _ = run_against(server, tmp_path, 2)
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_fault_200_without_usage(
    tmp_path: Path, make_emulator: MakeEmulator, stream: bool
) -> None:
    server = make_emulator(no_usage_rate=1.0)
    result, run_dir = run_against(server, tmp_path, 5, "--quiet", stream=stream)
    assert result.exit_code == 0, result.output
    # Visible even with --quiet, and each row says so.
    assert "warning: 5 answers came without usage" in result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "ok" and row["content"]
        assert row["prompt_tokens"] is None and row["completion_tokens"] is None
        assert row["credits"] is None and row["cost_usd"] is None  # unknown, not zero
        assert row["error_code"] == "missing_usage" and row["error_type"] == "warning"
    status = run_cli(["status", str(run_dir), "--json"])
    assert '"rows_missing_usage": 5' in status.output
    assert server.stats.billed_requests == 5  # the gateway billed them all the same


def test_fault_proxy_html_502(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(fail_502=1.0)
    result, run_dir = run_against(server, tmp_path, 2, max_attempts=2)
    assert result.exit_code == 1, result.output
    for row in by_id(run_dir).values():
        assert row["status"] == "error" and row["http_status"] == 502
        assert row["error_code"] == "http_502" and row["attempts"] == 2
        assert "'502 Bad Gateway'" in row["error_message"] and "HTML page" in row["error_message"]
    server.config.fail_502 = 0.3
    again, run_dir = run_against(server, tmp_path, 2)
    assert again.exit_code == 0, again.output  # retryable: the resume sent them again


@pytest.mark.parametrize("style", ["none", "absurd", "garbage"])
def test_fault_429_with_missing_absurd_or_garbage_retry_after_backs_off(
    make_emulator: MakeEmulator, style: str
) -> None:
    server = make_emulator(fail_429=1.0, retry_after=style)
    settings = ClientSettings(endpoint=server.base_url, api_key=KEY)

    async def main() -> errors.BatchrunError:
        async with ApiClient(settings) as client:
            try:
                await client.complete(b'{"model":"gemini-3.1-pro","messages":'
                                      b'[{"role":"user","content":"x"}]}', stream=False)
            except errors.BatchrunError as error:
                return error
        raise AssertionError("expected a 429")

    error = anyio.run(main)
    assert isinstance(error, errors.RateLimitedError)
    assert error.retry_after is None  # our own backoff, never 10^9 seconds


def test_fault_429_with_absurd_retry_after(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(fail_429=0.3, retry_after="absurd", seed=5)
    started = time.monotonic()
    result, run_dir = run_against(server, tmp_path, 10, max_attempts=12)
    assert result.exit_code == 0, result.output
    assert server.stats.faults["429"] > 0
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 10)
    # Not a speed check: honouring "Retry-After: 1000000000" would take 31 years.
    assert time.monotonic() - started < 120


def test_fault_429_without_retry_after(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(fail_429=1.0, retry_after="none")
    result, run_dir = run_against(server, tmp_path, 1, max_attempts=2)
    assert result.exit_code == 1, result.output
    row = by_id(run_dir)["row-0"]
    assert row["error_code"] == "rate_limit_exceeded" and row["http_status"] == 429
    assert row["attempts"] == 2 and row["status"] == "error"
    server.config.fail_429 = 0.0
    again, _ = run_against(server, tmp_path, 1)
    assert again.exit_code == 0, again.output  # retryable: sent again on resume


# ---------------------------------------------------------------- the key's state changes midway


def test_fault_key_revoked_midrun(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(revoke_after=15)
    result, run_dir = run_against(server, tmp_path, 60, concurrency=2)
    assert result.exit_code == 3, result.output
    assert "invalid_api_key" in result.output and "BATCHRUN_API_KEY" in result.output
    assert "batchrun run" in result.output and f"--out {run_dir}" in result.output
    assert KEY not in result.output
    rows = by_id(run_dir)
    ok = [row for row in rows.values() if row["status"] == "ok"]
    refused = [row for row in rows.values() if row["status"] == "error"]
    assert len(ok) == server.stats.billed_requests == 15  # every paid answer kept
    assert refused and all(row["error_code"] == "invalid_api_key" for row in refused)
    assert len(refused) <= 2  # only what was in flight when the key went
    server.config.revoke_after = None  # a new key
    again, _ = run_against(server, tmp_path, 60, concurrency=2)
    assert again.exit_code == 0, again.output
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 60)


def test_fault_credits_run_out_midrun(tmp_path: Path, make_emulator: MakeEmulator) -> None:
    server = make_emulator(balance=1.0)
    result, run_dir = run_against(server, tmp_path, 100, concurrency=3)
    assert result.exit_code == 3, result.output
    assert "insufficient_credits" in result.output and "top up" in result.output
    rows = by_id(run_dir)
    ok = [row for row in rows.values() if row["status"] == "ok"]
    assert 0 < len(ok) < 100 and len(ok) == server.stats.billed_requests
    assert server.stats.faults["no_credits"] >= 1
    server.config.balance = 1000.0
    again, _ = run_against(server, tmp_path, 100, concurrency=3)
    assert again.exit_code == 0, again.output
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 100)


# ---------------------------------------------------------------- all at once


def test_fault_every_mode_at_once_loses_nothing(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    server = make_emulator(
        fail_503=0.03, fail_500=0.03, drop_rate=0.06, fail_429=0.01, retry_after="mixed",
        fail_502=0.03, not_json_rate=0.03, no_usage_rate=0.03, stall_rate=0.02, stall_s=1.0,
        early_eof_rate=0.03, seed=6,
    )
    result, run_dir = run_against(server, tmp_path, 200, "--read-timeout", "0.3",
                                  concurrency=32, max_attempts=10)
    assert result.exit_code == 0, result.output
    faults = server.stats.faults
    assert {"503", "500", "429", "502", "not_json", "no_usage", "stall", "early_eof"} <= set(
        faults)
    lost = faults["truncate"] + faults["stall"] + faults["early_eof"]
    assert_all_ok_and_nothing_paid_lost(server, run_dir, 200, lost_in_transit=lost)
    flagged = [row for row in by_id(run_dir).values() if row["error_code"] == "missing_usage"]
    assert 0 < len(flagged) <= faults["no_usage"]


# ---------------------------------------------------------------- the emulator's knobs


def test_emulator_fault_knobs_on_the_command_line_and_the_control_endpoint(
    make_emulator: MakeEmulator
) -> None:
    help_text = CliRunner().invoke(emulator_command, ["--help"]).output
    for flag in ("--fail-429", "--retry-after", "--fail-502", "--not-json-rate",
                 "--no-usage-rate", "--stall-rate", "--stall-s", "--early-eof-rate",
                 "--drop-mode", "--chunk-delay-ms", "--echo-key", "--revoke-after",
                 "--balance"):
        assert flag in help_text
    too_much = CliRunner().invoke(emulator_command, ["--fail-503", "0.6", "--fail-502", "0.6"])
    assert too_much.exit_code == 2 and "add up to more than 1" in too_much.output

    server = make_emulator()
    config_url = f"{server.root_url}/_emulator/config"
    changed = httpx.post(config_url, json={"stall_rate": 0.5, "retry_after": "absurd"})
    assert changed.status_code == 200 and changed.json()["retry_after"] == "absurd"
    assert server.config.stall_rate == 0.5
    assert httpx.post(config_url, json={"retry_after": "tomorrow"}).status_code == 400
    assert httpx.post(config_url, json={"fail_502": 0.7, "not_json_rate": 0.7}).status_code == 400


def test_emulator_fault_mix_is_seeded_and_counted_by_kind(make_emulator: MakeEmulator) -> None:
    knobs = {"fail_503": 0.1, "fail_429": 0.1, "fail_502": 0.1, "not_json_rate": 0.1,
             "no_usage_rate": 0.1, "early_eof_rate": 0.1, "drop_rate": 0.1, "seed": 9}
    body = {"model": "gemini-3.1-pro", "stream": False,
            "messages": [{"role": "user", "content": "x"}]}

    def statuses(server: EmulatorServer) -> list[str]:
        seen = []
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as http:
            for _ in range(60):
                try:
                    response = http.post(f"{server.base_url}/chat/completions", json=body)
                    seen.append(f"{response.status_code}:{len(response.content)}")
                except httpx.TransportError:
                    seen.append("dropped")
        return seen

    first, second = make_emulator(**knobs), make_emulator(**knobs)
    assert statuses(first) == statuses(second)
    assert first.stats.faults == second.stats.faults
    assert {"503", "429", "502", "not_json", "no_usage", "early_eof"} <= set(first.stats.faults)
    # Billed: every answer-shaped one (ok, no usage, cut, ended early); never the refusals.
    answered = first.stats.requests_total - sum(
        first.stats.faults[kind] for kind in ("503", "429", "502", "not_json", "reset"))
    assert first.stats.billed_requests == answered
