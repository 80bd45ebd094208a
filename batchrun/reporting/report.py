"""``batchrun report``: one self-contained HTML file about a run (inline SVG, no network).

Reading (results.parquet, run.json, the manifest for row kinds) is separate from the pure
aggregation (``ReportData``) and from the markup (``render``), so each is tested alone.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batchrun.core.errors import BatchrunError
from batchrun.core.result import record_credits
from batchrun.cost.catalog import USD_PER_CREDIT
from batchrun.cost.tokens import media_kind
from batchrun.manifest.job import job_from_mapping
from batchrun.manifest.reader import iter_rows
from batchrun.reporting.svg import bar_chart, line_chart
from batchrun.store.rundir import RunDir

_COLUMNS = ["id", "status", "prompt_tokens", "completion_tokens", "reasoning_tokens", "credits",
            "credits_computed", "latency_ms", "finished_at", "error_code", "error_message"]
TIME_BUCKETS = 40
LATENCY_BINS = 24
COSTLIEST_ROWS = 20
ERROR_EXAMPLES = 3


@dataclass
class ReportData:
    """Everything the report shows, aggregated from the result rows (pure)."""

    title: str
    rows_total: int
    rows_ok: int = 0
    rows_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    first_finish: float | None = None
    last_finish: float | None = None
    cost_by_kind: dict[str, float] = field(default_factory=dict)
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    finish_times: list[tuple[float, float]] = field(default_factory=list)  # (time, credits)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    costliest: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_pending(self) -> int:
        return max(0, self.rows_total - self.rows_ok - self.rows_failed)


def aggregate(
    title: str, rows_total: int, records: list[dict[str, Any]], kinds: dict[str, str]
) -> ReportData:
    """Fold result records into the report's figures."""
    data = ReportData(title=title, rows_total=rows_total)
    for record in records:
        credits = record.get("credits")
        if credits is None:
            credits = record.get("credits_computed") or 0.0
        kind = kinds.get(record["id"], "unknown")
        data.rows_by_kind[kind] = data.rows_by_kind.get(kind, 0) + 1
        data.cost_by_kind[kind] = data.cost_by_kind.get(kind, 0.0) + credits
        data.credits += credits
        finished = record.get("finished_at")
        if finished is not None:
            stamp = finished.timestamp() if hasattr(finished, "timestamp") else float(finished)
            data.finish_times.append((stamp, credits))
        if record.get("status") == "ok":
            data.rows_ok += 1
            data.prompt_tokens += record.get("prompt_tokens") or 0
            data.completion_tokens += record.get("completion_tokens") or 0
            data.reasoning_tokens += record.get("reasoning_tokens") or 0
            if record.get("latency_ms") is not None:
                data.latencies_ms.append(float(record["latency_ms"]))
        else:
            data.rows_failed += 1
            code = record.get("error_code") or "error"
            data.errors[code] += 1
            examples = data.error_examples.setdefault(code, [])
            if len(examples) < ERROR_EXAMPLES:
                examples.append((record["id"], record.get("error_message") or ""))
    data.finish_times.sort()
    if data.finish_times:
        data.first_finish = data.finish_times[0][0]
        data.last_finish = data.finish_times[-1][0]
    ranked = sorted(
        (r for r in records if record_credits(r)),
        key=record_credits,
        reverse=True,
    )
    data.costliest = ranked[:COSTLIEST_ROWS]
    return data


def latency_histogram(latencies_ms: list[float]) -> tuple[list[str], list[float]]:
    """Counts in log-spaced bins, so 50 ms and 50 s answers both show."""
    if not latencies_ms:
        return [], []
    low = max(1.0, min(latencies_ms))
    high = max(low * 1.01, max(latencies_ms))
    ratio = (high / low) ** (1 / LATENCY_BINS)
    edges = [low * ratio**step for step in range(LATENCY_BINS + 1)]
    counts = [0.0] * LATENCY_BINS
    for value in latencies_ms:
        position = 0 if value <= low else int(math.log(value / low) / math.log(ratio))
        counts[min(LATENCY_BINS - 1, max(0, position))] += 1
    labels = [f"{edge:,.0f}" for edge in edges[:-1]]
    return labels, counts


def over_time(
    finish_times: list[tuple[float, float]],
) -> tuple[list[float], list[float], list[float], str]:
    """Per time bucket: time since start, rows/s finished, cumulative credits, time unit."""
    if len(finish_times) < 2:
        return [], [], [], "seconds"
    start, end = finish_times[0][0], finish_times[-1][0]
    span = max(end - start, 1e-3)
    bucket_s = span / TIME_BUCKETS
    rows = [0] * TIME_BUCKETS
    spend = [0.0] * TIME_BUCKETS
    for stamp, credits in finish_times:
        position = min(TIME_BUCKETS - 1, int((stamp - start) / bucket_s))
        rows[position] += 1
        spend[position] += credits
    unit, unit_s = ("minutes", 60.0) if span >= 180 else ("seconds", 1.0)
    elapsed = [(index + 1) * bucket_s / unit_s for index in range(TIME_BUCKETS)]
    rates = [count / bucket_s for count in rows]
    cumulative: list[float] = []
    total = 0.0
    for amount in spend:
        total += amount
        cumulative.append(total)
    return elapsed, rates, cumulative, unit


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;
max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px}
.charts{display:flex;flex-wrap:wrap;gap:18px}
figure.chart{margin:0;border:1px solid #eee;border-radius:8px;padding:8px}
figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left}td.num{text-align:right}
"""


def _card(label: str, value: str) -> str:
    return f'<div class="card">{escape(label)}<b>{escape(value)}</b></div>'


def render(data: ReportData, *, generated_at: float | None = None) -> str:
    """The whole HTML document."""
    duration = (
        (data.last_finish - data.first_finish)
        if data.first_finish is not None and data.last_finish is not None else 0.0
    )
    rate = (data.rows_ok + data.rows_failed) / duration if duration > 0 else 0.0
    cards = "".join([
        _card("rows ok", f"{data.rows_ok:,}"),
        _card("rows failed", f"{data.rows_failed:,}"),
        _card("rows pending", f"{data.rows_pending:,}"),
        _card("credits", f"{data.credits:,.4f}"),
        _card("USD", f"${data.credits * USD_PER_CREDIT:,.4f}"),
        _card("prompt tokens", f"{data.prompt_tokens:,}"),
        _card("completion tokens", f"{data.completion_tokens:,}"),
        _card("reasoning tokens (not billed)", f"{data.reasoning_tokens:,}"),
        _card("rows/s", f"{rate:,.1f}"),
    ])
    kinds = sorted(data.cost_by_kind)
    latency_labels, latency_counts = latency_histogram(data.latencies_ms)
    elapsed, rates, spend, unit = over_time(data.finish_times)
    charts = "".join([
        bar_chart("Cost by kind of row (credits)", kinds,
                  [data.cost_by_kind[k] for k in kinds], "credits"),
        bar_chart("Latency histogram (ms, log bins)", latency_labels, latency_counts, "rows"),
        line_chart("Throughput over time", elapsed, rates, "rows/s", unit),
        line_chart("Spend over time", elapsed, spend, "credits", unit),
    ])
    error_rows = "".join(
        f"<tr><td>{escape(code)}</td><td class=num>{count:,}</td><td>"
        + "<br>".join(f"{escape(row_id)}: {escape(message[:200])}"
                      for row_id, message in data.error_examples.get(code, []))
        + "</td></tr>"
        for code, count in data.errors.most_common()
    ) or '<tr><td colspan="3">no errors</td></tr>'
    costly_rows = "".join(
        f"<tr><td>{escape(str(r['id']))}</td>"
        f"<td class=num>{record_credits(r):.6f}</td>"
        f"<td class=num>{r.get('prompt_tokens') or 0:,}</td>"
        f"<td class=num>{r.get('completion_tokens') or 0:,}</td>"
        f"<td class=num>{r.get('reasoning_tokens') or 0:,}</td>"
        f"<td class=num>{(r.get('latency_ms') or 0):,.0f}</td></tr>"
        for r in data.costliest
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(generated_at or time.time()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>batchrun report: {escape(data.title)}</title>
<style>{_STYLE}</style></head><body>
<h1>batchrun report: {escape(data.title)}</h1>
<p>{data.rows_total:,} manifest rows · generated {stamp}</p>
<div class="cards">{cards}</div>
<h2>Charts</h2><div class="charts">{charts}</div>
<h2>Errors by code</h2>
<table><tr><th>code</th><th>rows</th><th>examples</th></tr>{error_rows}</table>
<h2>Costliest rows</h2>
<table><tr><th>id</th><th>credits</th><th>prompt</th><th>completion</th><th>reasoning</th>
<th>latency ms</th></tr>{costly_rows}</table>
</body></html>
"""


def _row_kinds(info: dict[str, Any]) -> dict[str, str]:
    """id → text/image/pdf/audio/video from the manifest, when it is still there."""
    manifest = Path(str(info.get("manifest", "")))
    if not manifest.is_file():
        return {}
    try:
        job = job_from_mapping(dict(info.get("job") or {}), source="run.json")
    except BatchrunError:
        return {}
    kinds: dict[str, str] = {}
    try:
        for row in iter_rows(manifest, job, check_duplicates=False):
            kinds[row.id] = media_kind(row.media[0]) if row.media else "text"
    except BatchrunError:
        return kinds
    return kinds


def build_report(run_dir_path: Path) -> str:
    """Read a run directory and return its HTML report."""
    run_dir = RunDir(run_dir_path)
    info = run_dir.read_info()
    kinds = _row_kinds(info)
    records: list[dict[str, Any]] = []
    if run_dir.journal_path.exists():
        # The journal is the truth (results.parquet may predate a resume); latest line wins.
        records = [{"id": row_id, **fields}
                   for row_id, fields in run_dir.latest_records(tuple(_COLUMNS[1:])).items()]
    elif run_dir.results_path.exists():
        parquet = pq.ParquetFile(run_dir.results_path)
        for batch in parquet.iter_batches(batch_size=10_000, columns=_COLUMNS):
            records.extend(batch.to_pylist())
    data = aggregate(str(info.get("job", {}).get("name") or run_dir_path.name),
                     int(info.get("rows_total", 0)), records, kinds)
    return render(data)
