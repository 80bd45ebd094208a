"""What ``batchrun run`` was asked, as one value, and the command line that asks it again.

``RunOptions`` has one field per option of ``run`` (the CLI builds it from the parsed flags by
name). A field's metadata says which flag it is, whether it goes into the resume command and
which ``JobSpec`` field it overrides, so the resume command and the job overrides follow from
the options instead of being written out by hand.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.manifest.job import DEFAULT_ENDPOINT, JobSpec


def _flag(flag: str, *, resume: bool = True, job: str | None = None, default: Any = None) -> Any:
    return field(default=default, metadata={"flag": flag, "resume": resume, "job": job})


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run. Fields in the resume command come in the order below."""

    manifest: Path
    out: Path
    job_file: Path | None = _flag("--job")
    endpoint: str | None = _flag("--endpoint", job="endpoint")
    emulate: bool = _flag("--emulate", default=False)
    concurrency: int | None = _flag("--concurrency", job="concurrency")
    rpm: float | None = _flag("--rpm", job="rpm")
    tpm: float | None = _flag("--tpm", job="tpm")
    max_credits: float | None = _flag("--max-credits", job="max_credits")
    media_root: Path | None = _flag("--media-root", job="media_root")
    media_budget: int | None = _flag("--media-budget", job="media_budget_bytes")
    reuse: Path | None = _flag("--reuse")
    yes: bool = _flag("--yes", default=False)
    connect_timeout_s: float | None = _flag("--connect-timeout", job="connect_timeout_s")
    read_timeout_s: float | None = _flag("--read-timeout", job="read_timeout_s")
    request_timeout_s: float | None = _flag("--request-timeout", job="request_timeout_s")
    breaker_first: int | None = _flag("--breaker-first", job="breaker_first")
    breaker_window: int | None = _flag("--breaker-window", job="breaker_window")
    breaker_rate: float | None = _flag("--breaker-rate", job="breaker_rate")
    engine: str | None = _flag("--engine")  # None: this machine ("local")
    ray_address: str | None = _flag("--ray-address")
    workers: int | None = _flag("--workers")
    # The threshold this run was let start under: a pasted resume (no one to ask) keeps it.
    confirm_above: float | None = _flag("--confirm-above", job="confirm_above")
    # Not in the resume command: a key never is; the rest belong to one session.
    api_key: str | None = _flag("--api-key", resume=False)
    retry_failed: bool = _flag("--retry-failed", resume=False, default=False)
    allow_job_change: bool = _flag("--allow-job-change", resume=False, default=False)
    # "incomplete": also send again rows answered ok but cut short (finish_reason not stop).
    redo: str | None = _flag("--redo", resume=False)
    ignore_balance: bool = _flag("--ignore-balance", resume=False, default=False)
    calibrate: int | None = _flag("--calibrate", resume=False)
    quiet: bool = _flag("--quiet", resume=False, default=False)
    as_json: bool = _flag("--json", resume=False, default=False)
    progress_every: float = _flag("--progress-every", resume=False, default=5.0)

    def job_overrides(self) -> dict[str, Any]:
        """The ``JobSpec`` fields the options override (None: not given)."""
        overrides: dict[str, Any] = {}
        for option in dataclasses.fields(self):
            target = option.metadata.get("job")
            if target is not None:
                value = getattr(self, option.name)
                overrides[target] = str(value) if isinstance(value, Path) else value
        return overrides

    def resume_command(self, **changes: Any) -> str:
        """The command line that resumes this run: the same flags, never the API key.
        ``changes`` replace option values first (a higher ``max_credits``, …)."""
        options = dataclasses.replace(self, **changes) if changes else self
        # Paths made absolute: `status` shows the command later, from wherever it is asked.
        parts = ["batchrun", "run", os.path.abspath(options.manifest), "--out",
                 os.path.abspath(options.out)]
        for option in dataclasses.fields(options):
            if not option.metadata.get("resume"):
                continue
            value = getattr(options, option.name)
            if value is None or value is False:
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            elif isinstance(value, Path):
                value = os.path.abspath(value)
            flag = option.metadata["flag"]
            parts += [flag] if value is True else [flag, str(value)]
        return shlex.join(parts)

    @classmethod
    def flag_of(cls, name: str) -> str:
        """The command-line flag of field ``name``."""
        return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["flag"])


def endpoint_to_resume(flag: str | None, spec: JobSpec, *, emulate: bool) -> str | None:
    """The ``--endpoint`` a resume command must name: the flag's, or the one the run resolved
    from ``BATCHRUN_ENDPOINT`` (a shell that pastes the command may not have it set; the run
    directory refuses another endpoint). None: the flag was not given and nothing needs it (the
    job file names the endpoint, the default gateway's, the embedded emulator)."""
    if flag is not None or spec.endpoint is not None or emulate:
        return flag
    resolved = spec.resolved_endpoint()
    return resolved if resolved != DEFAULT_ENDPOINT else None
