"""The run's tasks beside its workers: the interrupt watcher and the journal's fsync timer. Both
end the run through its ``stop``; what a person is told goes through the caller's ``notice``."""

from __future__ import annotations

import signal
from typing import Protocol

import anyio

from batchrun.core.errors import BatchrunError, StorageError
from batchrun.dispatch.plan import STOP_FATAL, STOP_INTERRUPT, Notice
from batchrun.store.journal import FSYNC_INTERVAL_S
from batchrun.store.rundir import RunDir

INTERRUPTED = ("interrupt: no new requests; waiting for the ones in flight "
               "(Ctrl-C again to abandon them)")
ABANDONED = "second interrupt: abandoning requests in flight"


class Stoppable(Protocol):
    """A run these tasks can stop (the runner)."""

    stopping: bool

    def stop(self, reason: str, error: BatchrunError | None = None) -> None: ...


async def watch_interrupts(run: Stoppable, abandon: anyio.CancelScope,
                           notice: Notice | None) -> None:
    """SIGINT or SIGTERM: the first stops dispatch (requests in flight finish and are
    recorded), the next one cancels ``abandon`` and with it the requests in flight."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    except (ValueError, NotImplementedError, RuntimeError):
        return  # not the main thread (embedded use): no signal handling
    with receiver as signals:
        async for _ in signals:
            if run.stopping:
                if notice is not None:
                    notice(ABANDONED)
                abandon.cancel()
                return
            if notice is not None:
                notice(INTERRUPTED)
            run.stop(STOP_INTERRUPT)


async def sync_journal(run_dir: RunDir, run: Stoppable) -> None:
    """fsync the journal at least every second, off the event loop. A disk that refuses (full,
    failing) stops the run as a failed journal write does: nothing more is written, answers
    still arriving are counted as unrecorded and stay pending for the resume."""
    while True:
        await anyio.sleep(FSYNC_INTERVAL_S / 2)
        try:
            await anyio.to_thread.run_sync(run_dir.sync_if_unsynced)
        except StorageError as error:
            run.stop(STOP_FATAL, error)
            return
