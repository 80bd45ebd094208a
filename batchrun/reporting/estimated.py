"""What ``batchrun estimate`` says of a run's manifest, for the report's estimate vs actual.

run.json does not keep the estimate a run was started with, so the report estimates the run's
manifest again, with the job recorded in run.json, as ``estimate`` does (uncalibrated: every
row answers the job's ``expected_output_tokens``). That is only the same estimate while the
manifest is the file the run read: a missing or changed manifest gives no estimate, and a note
saying why. The same pass gives each row's kind (text, image, pdf, audio, video), by the rule
the estimate uses, so cost by kind compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.core.errors import BatchrunError, RowError
from batchrun.cost.estimate import RunEstimate, Tally, assumed_estimate
from batchrun.manifest.reader import iter_rows, manifest_fingerprint
from batchrun.media.files import MediaResolver, media_root_for
from batchrun.plan.preflight import estimate_of
from batchrun.reporting.status import job_from_info

UNSENDABLE = "unsendable"


@dataclass
class ManifestEstimate:
    estimate: RunEstimate | None = None
    kinds: dict[str, str] = field(default_factory=dict)  # row id → kind
    note: str | None = None  # why there is no estimate


def estimate_manifest(info: dict[str, Any]) -> ManifestEstimate:
    """The estimate of the run's manifest and its rows' kinds, or a note saying why not."""
    manifest = Path(str(info.get("manifest") or ""))
    try:
        if not manifest.is_file():
            return ManifestEstimate(note=f"no estimate: the manifest {manifest} is gone")
        if manifest_fingerprint(manifest) != info.get("manifest_fingerprint"):
            return ManifestEstimate(note=f"no estimate: the manifest {manifest} has changed "
                                         "since the run began")
        return _estimate(manifest, info)
    except (BatchrunError, OSError) as error:
        return ManifestEstimate(note=f"no estimate: {getattr(error, 'message', error)}")


def _estimate(manifest: Path, info: dict[str, Any]) -> ManifestEstimate:
    job = job_from_info(info.get("job") or {})
    media = MediaResolver(media_root_for(manifest, job.media_root),
                          max_file_bytes=job.max_file_bytes)
    tally = Tally()
    kinds: dict[str, str] = {}
    for row in iter_rows(manifest, job, check_duplicates=False):
        if row.error is not None:
            tally.add_unsendable(row.id, row.line, row.error)
            kinds[row.id] = UNSENDABLE
            continue
        try:
            estimate = estimate_of(row, job, media)
        except RowError as error:
            tally.add_unsendable(row.id, row.line, error.message)
            kinds[row.id] = UNSENDABLE
            continue
        tally.add(estimate)
        kinds[row.id] = estimate.kind
    found = assumed_estimate(tally, job.expected_output_tokens, job.resolved_price())
    return ManifestEstimate(estimate=found, kinds=kinds)
