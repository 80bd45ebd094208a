"""``batchrun emulator``: serve the API emulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from batchrun.dispatch.eventloop import run_server
from batchrun.emulator.schedule import parse_rpm_schedule
from batchrun.emulator.server import (
    DROP_MODES,
    RETRY_AFTER_STYLES,
    EmulatorConfig,
    base_url_for,
    create_app,
    start_site,
)

_PROBABILITY = click.FloatRange(0.0, 1.0)
_NON_NEGATIVE = click.FloatRange(min=0.0)


def _schedule_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A usage error naming what is wrong with the schedule, before anything listens."""
    if value is not None:
        try:
            parse_rpm_schedule(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


async def _serve(config: EmulatorConfig, host: str, port: int) -> None:
    runner, bound_port = await start_site(create_app(config), host, port, shutdown_timeout=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Scripts read this one line to learn the port; everything else goes to stderr.
        click.echo(f"batchrun emulator listening on {base_url_for(host, bound_port)}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
    click.echo("batchrun emulator stopped", err=True)


@click.command(
    "emulator",
    epilog=(
        "\b\nExamples:\n"
        "  batchrun emulator --port 0 --latency-ms 200 --fail-503 0.05 --rpm 600 --balance 50\n"
        "  batchrun emulator --latency-ms 200 --stream-parts 4 --fail-429 0.02 "
        "--rpm-schedule 1200@0,300@60,1200@120\n"
        "  batchrun run rows.jsonl --out runs/x --endpoint http://127.0.0.1:PORT/v1 "
        "--api-key sk-test\n\n"
        "Control endpoints: GET /_emulator/stats, GET|POST /_emulator/config, "
        "POST /_emulator/reset."
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="TCP port; 0 picks a free one (read it from the first stdout line).")
@click.option("--latency-ms", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Delay before each answer starts, in milliseconds.")
@click.option("--jitter-ms", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Extra random delay, uniform in [0, MS).")
@click.option("--rpm", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Requests per minute before 429 rate_limit_exceeded (token bucket, 1 s burst).")
@click.option("--fail-503", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of 503 upstream_error (not billed).")
@click.option("--fail-500", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of 500 internal_error (not billed).")
@click.option("--balance", type=float, default=None,
              help="Starting credits; 402 insufficient_credits once spent. Default: unlimited.")
@click.option("--spend-limit", type=_NON_NEGATIVE, default=None,
              help="Credits this key may spend before 429 spend_limit_exceeded.")
@click.option("--drop-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of a dropped connection or a truncated answer.")
@click.option("--chars-per-token", type=click.FloatRange(min=0.0, min_open=True), default=4.0,
              show_default=True, help="The emulator's text tokenisation.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the fault and jitter draws.")
@click.option("--revoke-after", type=click.IntRange(min=0), default=None,
              help="Answer 401 invalid_api_key after N chat requests.")
@click.option("--drop-mode", type=click.Choice(DROP_MODES), default="mixed", show_default=True,
              help="What --drop-rate does: reset before any byte, truncate (reset mid-answer), "
              "or either.")
@click.option("--chunk-delay-ms", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Pause between stream events.")
@click.option("--fail-429", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of 429 rate_limit_exceeded whatever the rpm (not billed).")
@click.option("--retry-after", "retry_after", type=click.Choice(RETRY_AFTER_STYLES),
              default="seconds", show_default=True,
              help="Retry-After of --fail-429 answers: 1 s, none, absurd (10^9 s), garbage.")
@click.option("--fail-502", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of a proxy's HTML 502 Bad Gateway page (not billed).")
@click.option("--not-json-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of a 200 whose body is an HTML page, not JSON (not billed).")
@click.option("--no-usage-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability of a complete answer without usage or credits (billed).")
@click.option("--stall-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability that an answer stalls halfway for --stall-s (billed).")
@click.option("--stall-s", type=_NON_NEGATIVE, default=30.0, show_default=True,
              help="How long a stalled answer stays silent.")
@click.option("--early-eof-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Probability that an answer ends cleanly halfway, without usage or [DONE] "
              "(billed).")
@click.option("--echo-key", is_flag=True,
              help="Quote the caller's key in 401 messages, as careless gateways do.")
@click.option("--no-rate-headers", is_flag=True,
              help="Send no x-ratelimit-* headers with --rpm (only 429 and Retry-After).")
@click.option("--rpm-schedule", callback=_schedule_option, default=None,
              metavar="RPM@S,...",
              help="A limit that changes during the run, e.g. 1200@0,300@60,1200@120: "
              "requests/min from S seconds after start (or the last reset). Instead of --rpm.")
@click.option("--stream-parts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Send a streamed answer in N parts spread over the latency (first after "
              "latency/N, last at the full latency); 0: all at once after the latency.")
@click.option("--length-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Share of answers cut short with finish_reason length (chosen by the "
              "request: the same request is cut again).")
@click.option("--length-match", default=None, metavar="TEXT",
              help="Cut short (finish_reason length) every answer whose last user message "
              "contains TEXT.")
@click.option("--bad-json-rate", type=_PROBABILITY, default=0.0, show_default=True,
              help="Share of answers to a JSON Schema request that are badly formed (fences, "
              "thought text, a missing field, cut short).")
@click.option("--strict-stream-usage", is_flag=True,
              help="Send usage on a stream only when asked (stream_options.include_usage), as "
              "OpenAI and vLLM do.")
@click.option("--count-by-second", is_flag=True,
              help="Count chat requests per second of the clock in /_emulator/stats "
              "(requests_by_second), for benches.")
def emulator_command(host: str, port: int, no_rate_headers: bool, **options: Any) -> None:
    """Serve a local emulator of the Gemini 3.1 Pro chat-completions API.

    It answers deterministically (the same request gets the same reply), bills with the
    gateway's formula and injects the faults you ask for. Any key starting with sk- is accepted.
    """
    # Every other option's destination is the EmulatorConfig field of the same name.
    if options["rpm"] is not None and options["rpm_schedule"] is not None:
        raise click.UsageError("give --rpm or --rpm-schedule, not both (one limit at a time)")
    try:
        config = EmulatorConfig(rate_headers=not no_rate_headers, **options)
    except ValueError as exc:  # e.g. fault rates adding up to more than 1
        raise click.UsageError(str(exc)) from None
    try:
        run_server(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


if __name__ == "__main__":
    emulator_command()
