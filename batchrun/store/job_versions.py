"""The job versions of a run directory, kept in run.json: the request shape
(``manifest.request_shape``) each version sent, so that a resume under another job is noticed.

run.json holds ``job_version`` (the version rows are answered under now) and ``job_versions``
(``[{version, since, request_shape, changed}]``, oldest first). A resume whose shape differs
from the latest version's is refused (``JobChangedError``, exit 2) once rows were answered
under it, unless told (``--allow-job-change``): the change becomes the next version, and every
journal line carries the version it was written under (``job_version``, a results column).
A change before any row was answered mixes nothing: it becomes the next version unasked.
A run.json written before versions were kept counts its recorded job and endpoint as version 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.core.errors import InputError
from batchrun.manifest.request_shape import changed_fields, shape_of

JOB_VERSION = "job_version"
JOB_VERSIONS = "job_versions"
SHOWN_CHARS = 60  # of a changed value, in the refusal


class JobChangedError(InputError):
    """A resume under another job than the one the run directory's answers were made with."""


@dataclass(frozen=True)
class JobChange:
    """How this session's job differs from the run directory's latest version."""

    version: int  # the version the change becomes
    changed: list[str]
    before: dict[str, Any]
    after: dict[str, Any]
    answered: int  # rows answered (ok) in the run directory so far


def first_versions(shape: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's fields for a new run: version 1 is this shape."""
    return {JOB_VERSION: 1,
            JOB_VERSIONS: [{"version": 1, "since": time.time(), "request_shape": dict(shape)}]}


def latest_version(info: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """(number, request shape) of the version a run directory's rows are answered under."""
    versions = info.get(JOB_VERSIONS)
    if isinstance(versions, list) and versions:
        latest = versions[-1]
        return int(latest["version"]), dict(latest["request_shape"])
    return 1, shape_of(info.get("job") or {}, info.get("endpoint"))


def job_change(info: Mapping[str, Any], shape: Mapping[str, Any], *,
               answered: int) -> JobChange | None:
    """The change from the run directory's latest version to ``shape``; None if none."""
    version, before = latest_version(info)
    changed = changed_fields(before, shape)
    if not changed:
        return None
    return JobChange(version + 1, changed, before, dict(shape), answered)


def refusal(change: JobChange, run_path: Path, *, reuse_offered: bool = True) -> JobChangedError:
    """The error that stops a resume under a changed job, naming what changed and the two
    ways on (a new run directory with ``--reuse`` where the command has that flag)."""
    what = "; ".join(f"{name} changed from {_shown(change.before.get(name))} to "
                     f"{_shown(change.after.get(name))}" for name in change.changed)
    new_dir = "the same command with --out NEW_DIR"
    if reuse_offered:
        new_dir += (f" --reuse {run_path} (answers whose request did not change are copied from "
                    "it, not paid again)")
    return JobChangedError(
        f"{run_path} holds {change.answered:,} rows answered under another job: {what}. "
        "Resuming here would answer the rest under this job and mix both in one result. "
        f"Either:\n  - start a new run directory: {new_dir}\n"
        "  - or go on here under this job: the same command with --allow-job-change (run.json "
        f"records it as job version {change.version}; the results' job_version column says "
        "which version answered each row)"
    )


def with_version(earlier: Mapping[str, Any], shape: Mapping[str, Any], job: Any,
                 endpoint: str) -> tuple[dict[str, Any], int]:
    """run.json of a resumed run with this session's version recorded, and that version: the
    latest one if the shape is the same, else a new one (its job and endpoint become run.json's
    ``job`` and ``endpoint``)."""
    info = dict(earlier)
    version, before = latest_version(earlier)
    versions = list(earlier.get(JOB_VERSIONS) or [])
    if not versions:  # written before versions were kept: its own job is version 1
        versions = [{"version": 1, "since": earlier.get("created_at"), "request_shape": before}]
    changed = changed_fields(before, shape)
    if changed:
        version += 1
        versions.append({"version": version, "since": time.time(), "changed": changed,
                         "request_shape": dict(shape)})
        info.update(job=job, endpoint=endpoint)
    info.update({JOB_VERSION: version, JOB_VERSIONS: versions})
    return info, version


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
