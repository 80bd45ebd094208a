"""The exit codes of ``batchrun``, and how a run's outcome maps onto them.

0 all rows ok · 1 finished, some rows failed (or left pending) · 2 bad usage or input ·
3 stopped by a fatal API answer · 4 stopped at the budget cap · 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130

def run_exit_code(stop_reason: str | None, *, rows_failed: int, rows_pending: int) -> int:
    """Why dispatch stopped decides first; a run that was not stopped exits 1 when any row
    failed or is still pending, else 0."""
    # Here, not at the top: every command imports this module, and only a run needs dispatch.
    from batchrun.dispatch.plan import STOP_BUDGET, STOP_FATAL, STOP_INTERRUPT

    by_stop_reason = {STOP_FATAL: EXIT_FATAL, STOP_BUDGET: EXIT_BUDGET,
                      STOP_INTERRUPT: EXIT_INTERRUPTED}
    if stop_reason is not None and stop_reason in by_stop_reason:
        return by_stop_reason[stop_reason]
    return EXIT_ROWS_FAILED if (rows_failed or rows_pending) else EXIT_OK
