"""After dispatch: results.parquet compacted from the journal, and the totals of the whole run
(every session of the run directory) in its metadata and for the caller to show."""

from __future__ import annotations

from collections.abc import Callable

from batchrun import __version__
from batchrun.core.errors import StorageError
from batchrun.dispatch.plan import RunOutcome, RunPlan
from batchrun.store.summary import RunSummary, summarize


def finish(plan: RunPlan, outcome: RunOutcome, *, fingerprint: str, resume_command: str,
           warn: Callable[[str], None]) -> RunSummary:
    """Compact results.parquet from the journal and total the whole run (all sessions). A
    results file that cannot be written is a warning (``warn``): the journal holds every row."""
    summary = summarize(plan.run_dir.load_index(), plan.rows_total, resume_command=resume_command)
    metadata = {
        "batchrun_version": __version__,
        "job": plan.job.describe(),
        "model": plan.job.model,
        "endpoint": plan.endpoint,
        "manifest": str(plan.manifest.resolve()),
        "manifest_fingerprint": fingerprint,
        "stop_reason": outcome.stop_reason,
        "totals": summary.as_dict(),
    }
    try:
        plan.run_dir.compact(metadata)
    except StorageError as error:
        # The journal is complete; results.parquet is rebuilt by the next run or export.
        warn(f"warning: {error.message}; every finished row is in the journal: free space, "
             "then run the same command to write it")
    return summary
