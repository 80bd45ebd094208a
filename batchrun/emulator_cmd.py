"""``batchrun emulator``: serve the API emulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from batchrun.emulator import EmulatorConfig, base_url_for, create_app, start_site

_PROBABILITY = click.FloatRange(0.0, 1.0)
_NON_NEGATIVE = click.FloatRange(min=0.0)


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
@click.option("--no-rate-headers", is_flag=True,
              help="Send no x-ratelimit-* headers with --rpm (only 429 and Retry-After).")
def emulator_command(
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    rpm: float | None,
    fail_503: float,
    fail_500: float,
    balance: float | None,
    spend_limit: float | None,
    drop_rate: float,
    chars_per_token: float,
    seed: int,
    revoke_after: int | None,
    no_rate_headers: bool,
) -> None:
    """Serve a local emulator of the Gemini 3.1 Pro chat-completions API.

    It answers deterministically (the same request gets the same reply), bills with the
    seed's formula and injects the faults you ask for. Any key starting with sk- is accepted.
    """
    config = EmulatorConfig(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        rpm=rpm,
        fail_503=fail_503,
        fail_500=fail_500,
        balance=balance,
        spend_limit=spend_limit,
        drop_rate=drop_rate,
        chars_per_token=chars_per_token,
        seed=seed,
        revoke_after=revoke_after,
        rate_headers=not no_rate_headers,
    )
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


if __name__ == "__main__":
    emulator_command()
