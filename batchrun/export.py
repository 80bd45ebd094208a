"""``batchrun export``: the latest result of every row, as Parquet or JSONL."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from batchrun.errors import InputError
from batchrun.store import RunDir
from batchrun.summary import RunSummary


def _metadata(info: dict[str, Any], summary: RunSummary) -> dict[str, Any]:
    return {
        "batchrun_version": info.get("batchrun_version"),
        "job": info.get("job"),
        "model": (info.get("job") or {}).get("model"),
        "endpoint": info.get("endpoint"),
        "manifest": info.get("manifest"),
        "manifest_fingerprint": info.get("manifest_fingerprint"),
        "totals": summary.as_dict(),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


def export_results(run: RunDir, info: dict[str, Any], summary: RunSummary, output: Path) -> int:
    """Compact the journal, then write it where asked; returns the number of rows."""
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        raise InputError(f"--output must end in .parquet or .jsonl, not {output.name!r}")
    rows = run.compact(_metadata(info, summary))
    if suffix == ".parquet":
        if output.resolve() != run.results_path.resolve():
            shutil.copyfile(run.results_path, output)
        return rows
    with open(output, "wb") as handle:
        for batch in pq.ParquetFile(run.results_path).iter_batches(batch_size=2000):
            for record in batch.to_pylist():
                handle.write(orjson.dumps(record, default=_json_default) + b"\n")
    return rows
