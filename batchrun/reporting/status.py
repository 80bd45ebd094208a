"""``batchrun status``: what a run directory holds, from its journal (never compacts).

Besides the totals (``summary.RunSummary``) it says whether a process is running the directory,
whether results.parquet is current, and what finishing the run would cost: the estimate of
the rows a plain resume would send, from the manifest (as ``estimate`` computes it) when that
file is still there unchanged, and from the credits paid per answered row so far.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from batchrun.core.errors import InputError
from batchrun.cost.catalog import Price, UnknownModel, price_for
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import manifest_fingerprint
from batchrun.plan.preflight import scan_manifest
from batchrun.reporting.incomplete import incomplete_lines
from batchrun.store.index import JournalIndex
from batchrun.store.records import STATE_OK
from batchrun.store.retries import RetryTotals, retry_totals
from batchrun.store.rundir import RunDir
from batchrun.store.summary import RunSummary, summarize


def job_from_info(data: dict[str, Any]) -> JobSpec:
    """The JobSpec recorded in run.json (``JobSpec.describe()``); unknown fields dropped."""
    known = {f.name for f in dataclasses.fields(JobSpec)}
    fields = {k: v for k, v in data.items() if k in known and k != "price"}
    if "media_columns" in fields:
        fields["media_columns"] = tuple(fields["media_columns"] or ())
    spec = JobSpec(**fields)
    price = data.get("price")
    if isinstance(price, dict):
        spec = dataclasses.replace(spec, price=Price(**price))
    return spec


def resume_command_of(info: dict[str, Any], run_path: Path) -> str:
    """The command recorded by the last session, else the minimal one."""
    recorded = info.get("resume_command")
    if recorded:
        return str(recorded)
    return shlex.join(["batchrun", "run", str(info.get("manifest", "MANIFEST")),
                       "--out", str(run_path)])


def run_summary(run: RunDir, info: dict[str, Any], index: JournalIndex) -> RunSummary:
    return summarize(index, int(info.get("rows_total") or 0),
                     resume_command=resume_command_of(info, run.path))


def estimate_left(run: RunDir, info: dict[str, Any], index: JournalIndex) -> dict[str, Any]:
    """What a plain resume would send and cost. Reads the manifest past the done rows only."""
    job = job_from_info(info.get("job") or {})
    try:
        price = price_for(job.model, {job.model: job.price} if job.price else None)
    except UnknownModel:  # a run begun before unknown models were refused
        price = Price(0.0, 0.0)
    rows_total = int(info.get("rows_total") or 0)
    rows_paid_ok = index.count(STATE_OK)
    left: dict[str, Any] = {"rows": None, "from_manifest": None, "credits_observed": None,
                            "usd_observed": None, "note": None}
    manifest = Path(str(info.get("manifest") or ""))
    try:
        unchanged = manifest.is_file() and (
            manifest_fingerprint(manifest) == info.get("manifest_fingerprint"))
    except (InputError, OSError):
        unchanged = False
    if unchanged:
        preflight = scan_manifest(
            manifest, job, price,
            is_done=lambda row: index.is_done_row(row, retry_failed=False),
            done_lines=index.done_lines(retry_failed=False), rows_total=rows_total,
        )
        estimate = preflight.to_send.as_dict()
        left["from_manifest"] = {key: estimate[key] for key in (
            "rows", "rows_unsendable", "prompt_tokens", "output_tokens", "credits", "usd")}
        left["rows"] = preflight.to_send.rows
    else:
        left["note"] = (f"the manifest {manifest} is missing or changed since the run began; "
                        "no estimate from it")
    if left["rows"] is None:
        summary = summarize(index, rows_total)
        left["rows"] = summary.rows_pending + summary.rows_retryable
    if rows_paid_ok:
        per_row = index.credits / rows_paid_ok
        left["credits_observed"] = round(per_row * left["rows"], 8)
        left["usd_observed"] = round(price.usd(per_row * left["rows"]), 8)
    return left


def run_status(path: Path) -> dict[str, Any]:
    """The ``status --json`` object."""
    run = RunDir(path)
    info = run.read_info()
    index = run.load_index()
    # First: the manifest pass resolves rows an older journal recorded by id only.
    left = estimate_left(run, info, index)
    summary = run_summary(run, info, index)
    return {
        **summary.as_dict(),
        "estimate_left": left,
        "retries": retry_totals(run).as_dict(),
        "running": run.is_running(),
        "results_current": _results_current(run),
        "journal_lines": index.records,
        "manifest": info.get("manifest"),
        "endpoint": info.get("endpoint"),
        "model": (info.get("job") or {}).get("model"),
        "job_version": info.get("job_version"),
    }


def _results_current(run: RunDir) -> bool:
    """Whether results.parquet was compacted after the journal's last line."""
    try:
        results = run.results_path.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        journal = run.journal_path.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return results >= journal


def status_lines(status: dict[str, Any], path: Path) -> list[str]:
    """The human ``status`` output."""
    lines = [
        f"{path}: {status['rows_ok']:,} ok · {status['rows_failed']:,} failed · "
        f"{status['rows_pending']:,} pending of {status['rows_total']:,}"
        + (" · running now" if status["running"] else "")
    ]
    if status["rows_reused"]:
        lines.append(f"  reused from an earlier run: {status['rows_reused']:,} (not paid here)")
    for code, count in status["errors_by_code"].items():
        lines.append(f"  {code}: {count:,}")
    lines += incomplete_lines(status.get("finish_reasons") or {}, status.get("redo_command"))
    lines.append(
        f"tokens: prompt {status['prompt_tokens']:,} · completion "
        f"{status['completion_tokens']:,} · reasoning {status['reasoning_tokens']:,}"
    )
    lines.append(f"spent: {status['credits']:,.6f} credits (${status['usd']:,.6f})")
    lines.extend(retry_lines(status["retries"]))
    if (status.get("job_version") or 1) > 1:
        lines.append(f"job: version {status['job_version']} since a resume changed it (run.json's "
                     "job_versions say what changed; the results' job_version column marks "
                     "which version answered each row)")
    if status.get("rows_missing_usage"):
        lines.append(f"warning: {status['rows_missing_usage']:,} answers came without usage; "
                     "their cost is not in the total")
    left = status["estimate_left"]
    if left["rows"]:
        parts = []
        if left["from_manifest"]:
            credits = left["from_manifest"]["credits"]
            usd = left["from_manifest"]["usd"]
            parts.append(f"≈ {credits['expected']:,.4f} credits (${usd['expected']:,.4f}) "
                         "by the estimate")
        if left["credits_observed"] is not None:
            parts.append(f"≈ {left['credits_observed']:,.4f} credits "
                         f"(${left['usd_observed']:,.4f}) at the cost per row so far")
        lines.append(f"left: {left['rows']:,} rows " + ("; ".join(parts) or "(no estimate)"))
        if left["note"]:
            lines.append(f"  note: {left['note']}")
    if not status["results_current"]:
        lines.append("results.parquet is older than the journal: `batchrun export` compacts it")
    if status["resume_command"]:
        lines.append(f"resume: {status['resume_command']}")
        if status["rows_failed"] > status["rows_retryable"]:
            lines.append("  (add --retry-failed to send the rows with final errors again)")
    return lines


def retry_lines(retries: dict[str, Any]) -> list[str]:
    """``RetryTotals.as_dict()`` for people: one line, none without retries."""
    if not retries["total"]:
        return []
    causes = ", ".join(f"{cause} ×{count:,}" for cause, count in retries["by_cause"].items())
    return [f"retries: {retries['total']:,} over {retries['rows']:,} rows ({causes}); "
            f"{duration_text(retries['seconds'])} spent on failed attempts and their waits"]


def run_retry_lines(path: Path) -> list[str]:
    """The retries of the run directory at ``path``, for the end of a run's summary."""
    totals: RetryTotals = retry_totals(RunDir(path))
    return retry_lines(totals.as_dict())


def duration_text(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"

