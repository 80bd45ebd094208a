"""``batchrun report``: one self-contained HTML file about a run (inline SVG, no network).

Reading is this module's part (the journal; run.json is ``run_facts``', the manifest's estimate
and row kinds ``estimated``'s); the pure aggregation is ``report_data``'s, the markup
``report_html``'s and the charts ``report_charts``' and ``svg``'s, so each is tested alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batchrun.reporting.estimated import estimate_manifest
from batchrun.reporting.report_data import aggregate
from batchrun.reporting.report_html import render
from batchrun.reporting.run_facts import run_facts
from batchrun.store.rundir import RunDir

# The fields the report reads of a journal line: answers and thoughts, the bulk of a
# journal, are never held.
_FIELDS = ("id", "status", "prompt_tokens", "completion_tokens", "reasoning_tokens", "credits",
           "credits_computed", "latency_ms", "started_at", "finished_at", "error_code",
           "error_message", "attempts", "finish_reason", "model", "reused_from",
           "failed_attempts")


def _journal_lines(run_dir: RunDir) -> Iterator[dict[str, Any]]:
    """Every journal line (oldest first); results.parquet for a run without a journal."""
    if run_dir.journal_path.exists():
        for record in run_dir.journal_records():
            yield {name: record.get(name) for name in _FIELDS}
        return
    if not run_dir.results_path.exists():
        return
    parquet = pq.ParquetFile(run_dir.results_path)
    names = set(parquet.schema_arrow.names)
    columns = [name for name in _FIELDS if name in names]
    for batch in parquet.iter_batches(batch_size=10_000, columns=columns):
        yield from batch.to_pylist()


def build_report(run_dir_path: Path, *, generated_at: float | None = None) -> str:
    """Read a run directory and return its HTML report."""
    run_dir = RunDir(run_dir_path)
    info = run_dir.read_info()
    facts = run_facts(run_dir, info)
    manifest = estimate_manifest(info)
    data = aggregate(facts.rows_total, _journal_lines(run_dir), manifest.kinds)
    return render(facts, data, manifest, generated_at=generated_at)
