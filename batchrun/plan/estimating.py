"""``batchrun estimate`` without a sample: the manifest scanned and priced, nothing sent. Plain
prompt rows are estimated from whole Arrow columns (``fast_estimate``), anything else row by
row. The calibrated estimate (a paid sample) is ``calibrating``'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.plan.fast_estimate import fast_preflight
from batchrun.plan.inputs import check_manifest, load_spec
from batchrun.plan.preflight import Preflight, scan_manifest
from batchrun.plan.sendable import unsendable_manifest


@dataclass
class Estimate:
    spec: JobSpec
    preflight: Preflight
    problem: InputError | None = None  # no row can be sent: the command's error, after its table


def estimate_manifest(manifest: Path, job_file: Path | None, *,
                      media_root: Path | None = None, endpoint: str | None = None) -> Estimate:
    """Scan the manifest and estimate it; nothing is sent."""
    check_manifest(manifest)
    spec = load_spec(job_file, endpoint=endpoint,
                     media_root=str(media_root) if media_root else None)
    price = spec.resolved_price()
    # Plain prompt rows are estimated from whole columns; anything else row by row.
    preflight = fast_preflight(manifest, spec, price) or scan_manifest(manifest, spec, price)
    return Estimate(spec, preflight, unsendable_manifest(manifest, spec, preflight))
