"""Opening a run directory for ``run``: lock first, then read what is done.

The lock is taken before the journal is read, so no other process can finish rows between
the read and our dispatch (they would be sent twice). A resumed run's manifest is the same file
(same sha256) as when it began, so its rows keep their line numbers: rows done are skipped by
line, unparsed, and the run's row count comes from run.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.core.errors import BatchrunError, InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.request.body import body_sha256, build_body, encode_body
from batchrun.store.cache import AnswerCache
from batchrun.store.index import JournalIndex
from batchrun.store.job_versions import JobChange
from batchrun.store.keys import cache_key
from batchrun.store.records import OK_STATES
from batchrun.store.rundir import RunDir


@dataclass
class OpenedRun:
    """A locked run directory and what its journal says."""

    run_dir: RunDir
    index: JournalIndex
    resumed: bool
    rows_total: int | None  # known when resuming (from run.json)
    retry_failed: bool
    job_change: JobChange | None = None  # resumed under another job (allowed, or nothing answered)

    @property
    def done_lines(self) -> bytes | None:
        return self.index.done_lines(retry_failed=self.retry_failed) if self.resumed else None

    def is_done(self, row: Row) -> bool:
        return self.index.is_done_row(row, retry_failed=self.retry_failed)

    @property
    def rows_done(self) -> int:
        return self.index.count_done(retry_failed=self.retry_failed)


def open_run(run_dir: RunDir, fingerprint: str, *, retry_failed: bool,
             job_shape: dict[str, Any] | None = None,
             allow_job_change: bool = False, redo_incomplete: bool = False,
             reuse_offered: bool = True) -> OpenedRun:
    """Lock ``run_dir``, refuse another manifest's run, load the journal index; refuse a job
    whose requests (``job_shape``) differ from those of the rows answered, unless allowed
    (``redo_incomplete``: answers cut short count as not done; ``reuse_offered``: the
    command has ``--reuse`` for the refusal to suggest)."""
    run_dir.lock()
    change = None
    try:
        resumed = run_dir.exists()
        rows_total = None
        if resumed:
            run_dir.check_same_manifest(fingerprint)
            total = run_dir.read_info().get("rows_total")
            rows_total = int(total) if isinstance(total, int) else None
        index = run_dir.load_index()
        index.redo_incomplete = redo_incomplete
        if resumed and job_shape is not None:
            answered = sum(index.count(state) for state in OK_STATES)
            change = run_dir.check_same_job(job_shape, answered=answered,
                                            allow_change=allow_job_change,
                                            reuse_offered=reuse_offered)
    except BaseException:
        run_dir.release()
        raise
    return OpenedRun(run_dir, index, resumed and rows_total is not None, rows_total,
                     retry_failed, change)


def open_reuse(path: Path, out: Path) -> AnswerCache:
    """The answers of ``--reuse OLD_RUN_DIR``."""
    if path.resolve() == out.resolve():
        raise InputError(
            "--reuse names the run directory itself; a run resumes there without it"
        )
    return AnswerCache.open(path)


def reuse_predicate(cache: AnswerCache, job: JobSpec, endpoint: str) -> Callable[[Row], bool]:
    """For the estimate: will this row be answered from the cache? Known exactly for rows
    without local media (their request is built here); rows with local media count as sent."""

    def will_reuse(row: Row) -> bool:
        try:
            body = encode_body(build_body(row, job, None))
        except BatchrunError:
            return False  # local media (read only when sending) or a row error
        return cache.contains(cache_key(endpoint, body_sha256(body)))

    return will_reuse
