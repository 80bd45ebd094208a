"""What a resume under a changed job says (the refusal itself is ``store.job_versions``')."""

from __future__ import annotations

from batchrun.store.job_versions import JobChange


def job_change_notice(change: JobChange) -> str:
    """The warning of a resume that goes on under a changed job: allowed, or nothing was
    answered under the earlier one."""
    fields = ", ".join(change.changed)
    if not change.answered:
        return (f"job changed since this run began ({fields}); no row was answered yet, so the "
                f"run goes on under this job, recorded in run.json as job version "
                f"{change.version}")
    return (f"job changed since this run began ({fields}): recorded in run.json as job version "
            f"{change.version}; the {change.answered:,} rows answered before keep their "
            f"version (the results' job_version column says which answered each row)")
