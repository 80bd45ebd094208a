"""The emulator under a shared gateway's conditions, over real loopback HTTP: a limit that
steps during the run (``rpm_schedule``), answers streamed in parts over the latency
(``stream_parts``), background 429s told apart from the caller's own rate limit, and mixtures."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest
from click.testing import CliRunner
from support.emulator_http import chat_body
from support.kit import reap

from batchrun.emulator.command import emulator_command
from batchrun.emulator.model import parse_chat_request
from batchrun.emulator.schedule import (
    RateStep,
    allowed_between,
    format_rpm_schedule,
    parse_rpm_schedule,
    rpm_at,
)
from batchrun.emulator.server import EmulatorConfig, EmulatorServer
from batchrun.emulator.state import EmulatorState, EmulatorStats

KEY = {"Authorization": "Bearer sk-test"}
LIMIT = "x-ratelimit-limit-requests"
MakeEmulator = Callable[..., EmulatorServer]




def post(http: httpx.Client, server: EmulatorServer, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{server.base_url}/chat/completions", json=body, headers=KEY)


def reset(http: httpx.Client, server: EmulatorServer) -> float:
    """Restart the emulator's clock (and schedule); the local time it restarted."""
    http.post(f"{server.root_url}/_emulator/reset").raise_for_status()
    return time.monotonic()


def data_events(raw: bytes) -> list[Any]:
    """The ``data:`` events of an SSE body, "[DONE]" kept as a string."""
    events: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def delta_text(events: list[Any], field: str) -> str:
    return "".join(event["choices"][0]["delta"].get(field) or "" for event in events
                   if isinstance(event, dict) and event["choices"])


# --- the schedule's text ----------------------------------------------------------------------


def test_schedule_parses_steps_and_reads_back() -> None:
    steps = parse_rpm_schedule(" 1200@0, 300 @ 60,1200@120.5 ")
    assert steps == (RateStep(0, 1200), RateStep(60, 300), RateStep(120.5, 1200))
    assert format_rpm_schedule(steps) == "1200@0,300@60,1200@120.5"
    assert parse_rpm_schedule(format_rpm_schedule(steps)) == steps
    assert parse_rpm_schedule("42@0") == (RateStep(0, 42),)


def test_schedule_rate_and_integral() -> None:
    steps = parse_rpm_schedule("1200@0,300@60,1200@120")
    assert [rpm_at(steps, t) for t in (0, 59.9, 60, 119, 120, 10_000)] == [
        1200, 1200, 300, 300, 1200, 1200]
    assert allowed_between(steps, 0, 180) == pytest.approx(1200 + 300 + 1200)
    assert allowed_between(steps, 30, 90) == pytest.approx(600 + 150)
    assert allowed_between(steps, 200, 260) == pytest.approx(1200)
    assert allowed_between(steps, 5, 5) == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("600@0,,60@1", "empty item"),
        ("600", "not RPM@SECONDS"),
        ("fast@0", "the rate 'fast' is not a number"),
        ("600@soon", "the time 'soon' is not a number"),
        ("inf@0", "finite"),
        ("0@0", "rate must be > 0"),
        ("-5@0", "rate must be > 0"),
        ("600@-1", "time must be >= 0"),
        ("600@5", "must start at 0"),
        ("600@0,60@0", "must increase"),
        ("600@0,300@20,100@10", "must increase"),
    ],
)
def test_schedule_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_rpm_schedule(text)


def test_config_checks_the_schedule_and_parts() -> None:
    with pytest.raises(ValueError, match="must start at 0"):
        EmulatorConfig(rpm_schedule="60@1")
    with pytest.raises(ValueError, match="exclusive"):
        EmulatorConfig(rpm=60, rpm_schedule="60@0")
    with pytest.raises(ValueError, match="stream_parts"):
        EmulatorConfig(stream_parts=-1)
    assert EmulatorConfig(rpm_schedule="60@0", stream_parts=4).to_dict()["rpm_schedule"] == "60@0"


def test_bucket_keeps_its_level_and_clamps_to_the_new_capacity() -> None:
    """A fake clock: the bucket refills along the schedule and its capacity follows it."""
    down = EmulatorState(EmulatorConfig(rpm_schedule="600@0,60@10"), EmulatorStats())
    origin = down.clock_origin
    assert [down.rate_wait(origin) for _ in range(10)] == [0.0] * 10  # capacity 10 at 600/min
    assert down.rate_wait(origin) == pytest.approx(0.1)
    # At 600/min until 10 s then 60/min: far more earned than the new capacity (1) holds.
    assert down.rate_wait(origin + 12) == 0.0
    assert down.rate_wait(origin + 12) == pytest.approx(1.0)
    up = EmulatorState(EmulatorConfig(rpm_schedule="60@0,600@10"), EmulatorStats())
    origin = up.clock_origin
    assert up.rate_wait(origin) == 0.0
    assert up.rate_wait(origin) == pytest.approx(1.0)
    # 10 s at 1/s and 0.5 s at 10/s earn 15 tokens; the new capacity keeps 10 of them.
    assert [up.rate_wait(origin + 10.5) for _ in range(10)] == [0.0] * 10
    assert up.rate_wait(origin + 10.5) == pytest.approx(0.1)


# --- the schedule on the wire -----------------------------------------------------------------


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def statuses_until(http: httpx.Client, server: EmulatorServer, start: float,
                   end: float) -> list[int]:
    """Requests every 10 ms from ``start`` to ``end`` (local monotonic seconds)."""
    statuses = []
    wait_until(start)
    while time.monotonic() < end:
        statuses.append(post(http, server, chat_body(stream=False)).status_code)
        time.sleep(0.01)
    return statuses


def test_the_limit_steps_down_on_schedule(make_emulator: MakeEmulator,
                                          http: httpx.Client) -> None:
    server = make_emulator(rpm_schedule="600@0,60@1")
    origin = reset(http, server)
    fast = statuses_until(http, server, origin, origin + 0.9)
    slow = statuses_until(http, server, origin + 1.2, origin + 2.7)
    # 600/min: a bucket of 10 plus 10/s; then 60/min: a bucket of 1 plus 1/s.
    assert 10 <= fast.count(200) <= 20 and 429 in fast
    assert 1 <= slow.count(200) <= 3
    assert slow.count(429) >= 5 * slow.count(200)
    stats = server.stats
    assert stats.faults["rpm"] == (fast + slow).count(429) and stats.faults["429"] == 0


def test_announced_limit_follows_the_schedule(make_emulator: MakeEmulator,
                                              http: httpx.Client) -> None:
    server = make_emulator(rpm_schedule="60@0,600@0.5,30@1")
    origin = reset(http, server)
    first = post(http, server, chat_body(stream=False))
    refused = post(http, server, chat_body(stream=False))
    assert first.status_code == 200 and first.headers[LIMIT] == "60"
    assert refused.status_code == 429 and refused.headers[LIMIT] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    wait_until(origin + 0.6)
    raised = post(http, server, chat_body(stream=False))
    assert raised.status_code == 200 and raised.headers[LIMIT] == "600"
    wait_until(origin + 1.1)
    assert post(http, server, chat_body(stream=False)).headers[LIMIT] == "30"
    server.config.rate_headers = False
    assert LIMIT not in post(http, server, chat_body(stream=False)).headers


def test_announced_limit_is_the_one_when_the_answer_starts(make_emulator: MakeEmulator,
                                                          http: httpx.Client) -> None:
    """Admitted under 600/min, answered after the latency under 60/min."""
    server = make_emulator(rpm_schedule="600@0,60@0.2", latency_ms=400)
    reset(http, server)
    assert post(http, server, chat_body(stream=False)).headers[LIMIT] == "60"
    with http.stream("POST", f"{server.base_url}/chat/completions", json=chat_body(),
                     headers=KEY) as streamed:
        assert streamed.headers[LIMIT] == "60"


def test_reset_restarts_the_schedule(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(rpm_schedule="6000@0,60@0.3")
    time.sleep(0.35)
    assert post(http, server, chat_body(stream=False)).headers[LIMIT] == "60"
    reset(http, server)
    assert post(http, server, chat_body(stream=False)).headers[LIMIT] == "6000"


def test_schedule_and_parts_through_the_control_endpoint(make_emulator: MakeEmulator,
                                                         http: httpx.Client) -> None:
    server = make_emulator(rpm=600)
    url = f"{server.root_url}/_emulator/config"
    refused = http.post(url, json={"rpm_schedule": "60@0"})
    assert refused.status_code == 400 and "exclusive" in refused.json()["error"]["message"]
    for bad in ({"rpm": None, "rpm_schedule": "60@2"}, {"rpm_schedule": 60},
                {"stream_parts": -1}, {"stream_parts": 1.5}, {"count_by_second": 1}):
        assert http.post(url, json=bad).status_code == 400, bad
    assert server.config.rpm == 600 and server.config.rpm_schedule is None
    changed = http.post(url, json={"rpm": None, "rpm_schedule": "90@0,30@60",
                                   "stream_parts": 3, "count_by_second": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["rpm_schedule"] == "90@0,30@60" and changed.json()["stream_parts"] == 3
    assert post(http, server, chat_body(stream=False)).headers[LIMIT] == "90"


def test_requests_are_counted_by_second_on_request(make_emulator: MakeEmulator,
                                                   http: httpx.Client) -> None:
    quiet = make_emulator()
    post(http, quiet, chat_body(stream=False))
    assert http.get(f"{quiet.root_url}/_emulator/stats").json()["requests_by_second"] == {}
    server = make_emulator(count_by_second=True, rpm=60)
    reset(http, server)
    for _ in range(3):
        post(http, server, chat_body(stream=False))  # 429s count too: they were sent
    stats = http.get(f"{server.root_url}/_emulator/stats").json()
    assert stats["requests_by_second"] == {"0": 3}
    assert 0 <= stats["clock_s"] < 5


# --- background 429s against the caller's own rate limit --------------------------------------


def test_background_429_says_nothing_of_the_callers_rate(make_emulator: MakeEmulator,
                                                         http: httpx.Client) -> None:
    server = make_emulator(rpm=600, fail_429=1.0)
    response = post(http, server, chat_body())
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert not [name for name in response.headers if name.startswith("x-ratelimit")]
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert server.stats.faults == {"429": 1}


def test_bucket_429_announces_the_limit(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(rpm=1)
    assert post(http, server, chat_body()).status_code == 200
    refused = post(http, server, chat_body())
    assert refused.status_code == 429 and refused.headers[LIMIT] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert server.stats.faults == {"rpm": 1}
    server.config.rate_headers = False
    assert LIMIT not in post(http, server, chat_body()).headers


# --- answers streamed in parts over the latency -----------------------------------------------


def timed_stream(http: httpx.Client, server: EmulatorServer,
                 body: dict[str, Any]) -> tuple[float, list[tuple[float, bytes]]]:
    """(seconds to the headers, [(seconds to the chunk, chunk)]) of one streamed answer."""
    started = time.monotonic()
    chunks: list[tuple[float, bytes]] = []
    with http.stream("POST", f"{server.base_url}/chat/completions", json=body,
                     headers=KEY) as response:
        assert response.status_code == 200
        headers_at = time.monotonic() - started
        for chunk in response.iter_raw():
            chunks.append((time.monotonic() - started, chunk))
    return headers_at, chunks


def bursts(chunks: list[tuple[float, bytes]], gap_s: float = 0.05) -> list[bytes]:
    """Chunks arriving within ``gap_s`` of each other joined: one entry per part sent."""
    groups: list[bytes] = []
    last = -1.0
    for at, chunk in chunks:
        if groups and at - last < gap_s:
            groups[-1] += chunk
        else:
            groups.append(chunk)
        last = at
    return groups


def test_stream_parts_spread_over_the_latency(make_emulator: MakeEmulator,
                                              http: httpx.Client) -> None:
    server = make_emulator(latency_ms=300, stream_parts=3)
    headers_at, chunks = timed_stream(http, server, chat_body())
    first, last = chunks[0][0], chunks[-1][0]
    assert 0.08 <= headers_at <= 0.22  # the headers come with the first part, not before
    assert 0.08 <= first <= 0.22
    assert 0.28 <= last <= 0.6
    parts = bursts(chunks)
    assert len(parts) == 3, [at for at, _ in chunks]
    events = [data_events(part) for part in parts]
    assert events[0][0]["choices"][0]["delta"]["role"] == "assistant"
    for part in events:  # every part carries text
        assert delta_text(part, "content") + delta_text(part, "reasoning_content")
    assert events[-1][-1] == "[DONE]" and "usage" in events[-1][-2]
    assert events[-1][-3]["choices"][0]["finish_reason"] == "stop"
    assert all(e == "[DONE]" or "usage" in e or e["choices"][0]["finish_reason"] is None
               for part in events[:-1] for e in part)


def test_parted_stream_says_what_the_whole_stream_says(make_emulator: MakeEmulator,
                                                       http: httpx.Client) -> None:
    whole, parted = make_emulator(), make_emulator(stream_parts=5)
    for body in (chat_body(), chat_body(include_thoughts=False), chat_body(max_tokens=3)):
        one = data_events(post(http, whole, body).content)
        other = data_events(post(http, parted, body).content)
        for field in ("content", "reasoning_content"):
            assert delta_text(one, field) == delta_text(other, field)
        assert one[-2]["usage"] == other[-2]["usage"] and other[-1] == "[DONE]"
        assert len([e for e in other[:-2] if e["choices"][0]["delta"].get("content")]) >= min(
            5, len(delta_text(one, "content")))
    parted.config.thoughts_style = "tag"
    tagged = data_events(post(http, parted, chat_body()).content)
    assert delta_text(tagged, "content").startswith("<thought>")


def test_parts_leave_json_answers_alone(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(latency_ms=250, stream_parts=4)
    started = time.monotonic()
    response = post(http, server, chat_body(stream=False))
    assert time.monotonic() - started >= 0.24
    assert response.json()["choices"][0]["message"]["content"]


def test_thoughts_come_by_default(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    body = chat_body()
    assert "include_thoughts" not in body
    assert parse_chat_request(orjson.dumps(body)).include_thoughts is True
    for server in (make_emulator(), make_emulator(stream_parts=4, latency_ms=40)):
        assert delta_text(data_events(post(http, server, body).content), "reasoning_content")
    message = post(http, server, chat_body(stream=False)).json()["choices"][0]["message"]
    assert message["reasoning_content"]


def read_all(http: httpx.Client, server: EmulatorServer) -> tuple[bytes, float, bool]:
    """(body received, seconds taken, whether the connection broke)."""
    received = b""
    started = time.monotonic()
    try:
        with http.stream("POST", f"{server.base_url}/chat/completions", json=chat_body(),
                         headers=KEY) as response:
            for chunk in response.iter_raw():
                received += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return received, time.monotonic() - started, True
    return received, time.monotonic() - started, False


def test_faults_cut_a_parted_stream(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    truncated = make_emulator(latency_ms=120, stream_parts=3, drop_rate=1.0,
                              drop_mode="truncate")
    body, _, broken = read_all(http, truncated)
    assert broken and b"[DONE]" not in body and b"role" in body
    assert truncated.stats.dropped == 1 and truncated.stats.billed_requests == 1
    early = make_emulator(latency_ms=120, stream_parts=3, early_eof_rate=1.0)
    body, _, broken = read_all(http, early)
    assert not broken and b"[DONE]" not in body and b'"usage":' not in body
    assert b'"role":"assistant"' in body
    stalled = make_emulator(latency_ms=120, stream_parts=3, stall_rate=1.0, stall_s=0.3)
    body, took, broken = read_all(http, stalled)
    assert not broken and body.endswith(b"data: [DONE]\n\n") and took >= 0.4


# --- mixtures ---------------------------------------------------------------------------------


def test_schedule_background_429s_and_parts_together(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rpm_schedule="600@0,300@60", fail_429=0.3, stream_parts=4,
                           latency_ms=100, seed=7)
    answers: list[tuple[int, dict[str, str], bytes]] = []

    async def one(client: httpx.AsyncClient, number: int) -> None:
        body = chat_body(messages=[{"role": "user", "content": f"question {number}"}])
        response = await client.post(f"{server.base_url}/chat/completions", json=body,
                                     headers=KEY)
        answers.append((response.status_code, dict(response.headers), response.content))

    async def main() -> None:
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            for number in range(24):
                tg.start_soon(one, client, number)

    anyio.run(main)
    announced = [status for status, headers, _ in answers if LIMIT in headers]
    background = [status for status, headers, _ in answers
                  if status == 429 and LIMIT not in headers]
    stats = server.stats
    admitted = 24 - stats.faults["rpm"]
    assert stats.faults["rpm"] == announced.count(429)
    assert 10 <= admitted <= 12  # a bucket of 10 (plus what trickles in) for 24 callers
    assert stats.faults["429"] == len(background) > 0
    streamed = [content for status, _, content in answers if status == 200]
    assert len(streamed) == stats.by_status[200] == admitted - len(background)
    for content in streamed:
        assert content.endswith(b"data: [DONE]\n\n")
        assert delta_text(data_events(content), "reasoning_content")


# --- the command ------------------------------------------------------------------------------


def test_cli_lists_the_new_flags() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])
    assert result.exit_code == 0
    for flag in ("--rpm-schedule", "--stream-parts", "--count-by-second"):
        assert flag in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm-schedule", "600@5"], "must start at 0"),
        (["--rpm-schedule", "600@0,60@0"], "must increase"),
        (["--rpm-schedule", "nope"], "not RPM@SECONDS"),
        (["--rpm", "60", "--rpm-schedule", "60@0"], "not both"),
        (["--stream-parts", "-1"], "--stream-parts"),
    ],
)
def test_cli_refuses_bad_conditions_as_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(emulator_command, ["--port", "0", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_serves_a_mixture(http: httpx.Client) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun.emulator", "--port", "0", "--latency-ms", "60",
         "--rpm-schedule", "1200@0,300@60,1200@120", "--fail-429", "0.02",
         "--stream-parts", "4", "--count-by-second"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:"), line
        root = base_url[: -len("/v1")]
        config = http.get(f"{root}/_emulator/config").json()
        assert config["rpm_schedule"] == "1200@0,300@60,1200@120"
        assert (config["stream_parts"], config["fail_429"], config["rpm"]) == (4, 0.02, None)
        response = http.post(f"{base_url}/chat/completions", headers=KEY, json=chat_body())
        assert response.status_code == 200 and response.headers[LIMIT] == "1200"
        assert response.content.endswith(b"data: [DONE]\n\n")
        assert sum(http.get(f"{root}/_emulator/stats").json()[
            "requests_by_second"].values()) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        reap(process)
