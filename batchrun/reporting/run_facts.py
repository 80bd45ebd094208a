"""The report's header facts, from run.json: what was run, where and with what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchrun.manifest.job import JobSpec
from batchrun.reporting.status import job_from_info
from batchrun.store.rundir import RunDir

# The name a job gets when no job file was given (a job file's own name, else its file's stem,
# replaces it): the report says "no job file" rather than calling the run "job".
_UNNAMED_JOB = JobSpec().name


@dataclass(frozen=True)
class RunFacts:
    """The report's header: what was run, where, with what."""

    run_dir: str
    job_name: str | None  # None: no job file (the defaults and command-line flags)
    model: str
    endpoint: str  # without credentials
    manifest: str
    rows_total: int
    expected_output_tokens: int
    max_attempts: int
    usd_per_credit: float
    running: bool  # a process holds the run directory right now


def public_endpoint(url: str) -> str:
    """The endpoint without user, password or query (where a careless URL carries a key)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(not a URL)"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def run_facts(run_dir: RunDir, info: dict[str, Any]) -> RunFacts:
    recorded = dict(info.get("job") or {})
    job = job_from_info(recorded)
    name = str(recorded.get("name") or "")
    return RunFacts(
        run_dir=str(run_dir.path),
        job_name=None if name in ("", _UNNAMED_JOB) else name,
        model=job.model,
        endpoint=public_endpoint(str(info.get("endpoint") or job.endpoint or "")),
        manifest=str(info.get("manifest") or ""),
        rows_total=int(info.get("rows_total") or 0),
        expected_output_tokens=job.expected_output_tokens,
        max_attempts=job.max_attempts,
        usd_per_credit=job.resolved_price().usd_per_credit,
        running=run_dir.is_running(),
    )
