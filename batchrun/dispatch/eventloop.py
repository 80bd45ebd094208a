"""How a dispatch runs: on uvloop when it is installed, with a collector that keeps out of the way.

Measured at 200 ms latency x 512 in flight (`bench/throughput.py`, bench/RESULTS.md):

- CPython's full collections walk every tracked object, and after the imports (pyarrow,
  aiohttp, rich, click) that is hundreds of thousands of them: with the collector at its
  defaults the event loop stalled 30-50 ms at the 99th percentile and round trips ran ~10%
  over the server's latency (bare aiohttp on asyncio: 0.92 of the ideal rate with the
  collector on, 0.99 with it off). Objects that exist before dispatch live to the end anyway,
  so they are frozen out of the collector; young collections run every 50,000 net allocations
  instead of 700 (a 30,720-row run made 1 young collection at 50,000, 32 at 2,000). Cycles made
  during dispatch are still collected, so memory stays flat (`bench/memory.py`).
- uvloop (libuv's loop, C transports) took ~10% off the client's CPU per request there;
  ``BATCHRUN_EVENT_LOOP=asyncio`` runs on asyncio's own loop instead (to compare, to debug).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio

YOUNG_THRESHOLD = 50_000
LOOP_ENV = "BATCHRUN_EVENT_LOOP"

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def use_uvloop() -> bool:
    """uvloop unless the environment asks for asyncio's loop."""
    return os.environ.get(LOOP_ENV, "").strip().lower() != "asyncio"


@contextmanager
def lean_collector(young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze what exists now and collect the young generation less often; restore after."""
    previous = gc.get_threshold()
    frozen_by_caller = gc.get_freeze_count() > 0  # then thawing is the caller's business
    gc.collect()  # what is garbage now should not be frozen for the whole run
    gc.freeze()
    gc.set_threshold(young_threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if not frozen_by_caller:
            gc.unfreeze()


def run_dispatch(work: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(work)`` for code that keeps many requests in flight."""
    with lean_collector():
        # anyio's use_uvloop imports uvloop (winloop on Windows) without a fallback: ask for it
        # only when loop_factory() found it, so a machine without it runs on asyncio's loop.
        return anyio.run(work, backend_options={"use_uvloop": loop_factory() is not None})


def loop_factory() -> LoopFactory | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if not use_uvloop():
        return None
    try:
        import uvloop
    except ImportError:  # not installed (Windows, PyPy): asyncio's loop does the job
        return None
    return uvloop.new_event_loop


def run_server(main: Coroutine[object, object, T]) -> T:
    """``asyncio.run(main)`` for a server (the emulator) on the same loop and collector."""
    with lean_collector(), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
