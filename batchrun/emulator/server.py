"""An emulator of the Gemini 3.1 Pro gateway's /v1/chat/completions, served on loopback.

Faithful to the gateway's API reference (https://api.aivideoapi.ai) where it speaks (fields,
defaults, error table, billing formula), with knobs for the faults a batch runner must
survive: latency, rate limits, 500/503, dropped connections, an empty balance, a spend limit,
a revoked key. Requests are answered by ``handlers``; replies are deterministic (``model``),
media are counted like Gemini 3 (``media``), answers are rendered by ``render`` and the
knobs, counters and shared state live in ``state``. This module builds the app
(``create_app``) and serves it (``start_site``, or ``EmulatorServer`` in a thread of its own).

Choices where the API reference is silent:
- Checks run in the order auth, IP, rate limit, balance, spend limit, body, model, faults.
- Rate limit: a token bucket refilled at rpm/60 per second holding ``rpm_burst`` requests,
  by default one second of flow (at least 1): a strict gateway that refuses bursts, so a
  runner that bursts meets 429 early, and Retry-After is the time to the next token, not a
  minute. ``rpm_burst=rpm`` gives a whole minute's allowance up front instead.
- ``rpm_schedule`` ("1200@0,300@60,1200@120": requests/min from that second on, counted from
  the start or the last reset, not from the config change) is a limit that moves, as a shared
  gateway's spare capacity does. The bucket keeps its level across a step, refills along the
  schedule and is clamped to the new capacity; ``x-ratelimit-limit-requests`` announces the
  limit in force when the answer (or the 429) starts. ``rpm`` and ``rpm_schedule`` together
  are refused (ValueError, a 400 from /_emulator/config, a usage error from the CLI): one
  limit at a time, so a figure never depends on which one won.
- A 429 drawn by ``fail_429`` is the shared gateway refusing whatever the caller's rate: it
  carries only its Retry-After style, never x-ratelimit-*, and counts as faults["429"]; a
  refusal of the rpm bucket carries x-ratelimit-* (with ``rate_headers``) and counts as
  faults["rpm"].
- Billing happens when the answer starts: a stream cut after its first bytes (or a JSON body
  cut halfway) is billed — "paid but lost" — while 500/503 and a connection reset before any
  byte are not. The balance may go below zero on the request that crosses it, as may the spend.
- ``revoke_after`` counts chat requests since start (or the last reset); reset also refills the
  rate bucket, re-seeds the fault RNG and zeroes the spend, i.e. a fresh key.
- Latency (+ jitter) is spent before the answer, a 500/503 or a drop: the upstream's time.
  Refusals before that (401 … 404) answer at once, as a gateway would without calling upstream.
- A stream is: role delta, one ``: keep-alive`` comment, thought deltas (field style), content
  deltas with ``finish_reason`` on the last, a ``choices: []`` chunk with usage and
  credits_consumed, ``data: [DONE]``. In tag style the ``<thought>`` prefix is part of the
  content deltas and a piece boundary may fall inside a tag, which a client must survive.
- ``stream_parts=N`` (0: the whole stream in one write after the latency) sends a streamed
  answer as a gateway does while the model works: N writes, latency/N apart, the headers and
  first part after latency/N, the last part (finish_reason, usage, [DONE]) at the full
  latency. Thoughts and content are each cut into N pieces and the deltas spread in order
  (thoughts first) over the parts, so every part carries text. Errors, drops and JSON
  answers still spend the whole latency first; truncate, early_eof and stall cut the paced
  stream at the same event as an unpaced one. ``chunk_delay_ms`` still pauses after each event.
- ``include_thoughts`` defaults to true, as the gateway's does: a body without it gets thoughts.
- The id is ``chatcmpl-`` + the first 32 hex digits of sha256(raw body): same body, same id.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from batchrun.emulator.handlers import (
    CHAT_PATH,
    CREDITS_PATH,
    STATE_KEY,
    chat_completions,
    get_config,
    get_credits,
    get_stats,
    not_found,
    post_config,
    post_reset,
)
from batchrun.emulator.render import ERROR_TABLE, credits_for, error_response
from batchrun.emulator.state import (
    DROP_MODES,
    FAULT_RATES,
    RETRY_AFTER_STYLES,
    THOUGHTS_STYLES,
    EmulatorConfig,
    EmulatorState,
    EmulatorStats,
    apply_config,
)

__all__ = [
    "DROP_MODES",
    "ERROR_TABLE",
    "FAULT_RATES",
    "RETRY_AFTER_STYLES",
    "THOUGHTS_STYLES",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "apply_config",
    "base_url_for",
    "create_app",
    "credits_for",
    "error_response",
    "start_site",
]

_HARD_BODY_LIMIT = 1 << 30  # aiohttp's own cap; ``max_body_mb`` is the configurable one


def create_app(config: EmulatorConfig, stats: EmulatorStats | None = None) -> web.Application:
    """The aiohttp application; ``stats`` is filled in as requests arrive."""
    config.validate()
    app = web.Application(client_max_size=_HARD_BODY_LIMIT)
    app[STATE_KEY] = EmulatorState(config, stats if stats is not None else EmulatorStats())
    app.router.add_post(CHAT_PATH, chat_completions)
    app.router.add_get(CREDITS_PATH, get_credits)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_post("/_emulator/config", post_config)
    app.router.add_post("/_emulator/reset", post_reset)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


async def start_site(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 0.5
) -> tuple[web.AppRunner, int]:
    """Bind ``app`` (no access log: it would cost more than a request) and return the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    # A client opening hundreds of connections at once must not overflow the accept queue
    # (aiohttp's default is 128): dropped SYNs come back only after a 1 s retransmission.
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def base_url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class EmulatorServer:
    """Runs the app on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(
        self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.stats = EmulatorStats()
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``"""
        return base_url_for(self.host, self.port)

    @property
    def root_url(self) -> str:
        """The server root, where ``/_emulator/...`` lives."""
        return self.base_url[: -len("/v1")]

    def start(self) -> EmulatorServer:
        """Bind, serve in the background and return once the port is known."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        app = create_app(self.config, self.stats)

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                runner, self.port = loop.run_until_complete(start_site(app, self.host, self.port))
            except BaseException as exc:
                failure.append(exc)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="batchrun-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving (in-flight requests get a short grace) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
