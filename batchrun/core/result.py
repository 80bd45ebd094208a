"""What one finished row holds, and the Parquet schema of results (the README's "Results
(`results.parquet`)" section describes the columns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from batchrun.core.ratelimit_info import RateLimitInfo

RESULTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("content", pa.string()),
        ("thoughts", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("credits", pa.float64()),
        ("credits_computed", pa.float64()),
        ("cost_usd", pa.float64()),
        ("http_status", pa.int32()),
        ("error_code", pa.string()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("attempts", pa.int32()),
        ("latency_ms", pa.float64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("request_sha256", pa.string()),
        ("response_id", pa.string()),
        ("extra", pa.string()),
        # Added after the others: the version of the job (run.json's job_versions) that
        # answered the row; null in lines written before versions were kept.
        ("job_version", pa.int32()),
        # Structured output (a job's output_schema): the answer parsed, as JSON text, when it
        # fits the schema; why it does not, for a row that never fitted.
        ("parsed", pa.string()),
        ("schema_error", pa.string()),
    ]
)

STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass(slots=True)
class Completion:
    """A successful answer, parsed from JSON or from an SSE stream."""

    content: str = ""
    thoughts: str = ""
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    credits_consumed: float | None = None
    http_status: int = 200
    # Everything else the answer carried (annotations, tool calls, unknown fields).
    extra: dict[str, Any] = field(default_factory=dict)
    # The answer's x-ratelimit-* headers, for the limiter (not recorded); None when absent.
    rate_limit: RateLimitInfo | None = None

    @property
    def has_usage(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None


@dataclass(slots=True)
class RowResult:
    """One line of the journal and one row of results.parquet."""

    id: str
    status: str
    content: str | None = None
    thoughts: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    credits: float | None = None
    credits_computed: float | None = None
    cost_usd: float | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    # Unix epoch seconds; written to Parquet as timestamp(us, UTC).
    started_at: float | None = None
    finished_at: float | None = None
    request_sha256: str | None = None
    response_id: str | None = None
    extra: str | None = None
    job_version: int | None = None
    parsed: str | None = None
    schema_error: str | None = None
    # Journal only (not in the Parquet schema): whether a resume should send this row again,
    # the manifest line it answers, the cache key of its request, and for an answer reused
    # from an earlier run (``--reuse``) that run's directory.
    retryable: bool = False
    line: int | None = None
    cache_key: str | None = None
    reused_from: str | None = None
    # Journal only too: the cause of each failed attempt of this line, in order ("503
    # upstream_error", "transport_error" …; ``store.retries`` counts the retries from them).
    # The last field on purpose: ``store.retries`` passes over lines that end with it null.
    failed_attempts: list[str] | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        """The journal line (without its newline); orjson encodes dataclasses natively."""
        try:
            return orjson.dumps(self)
        except TypeError:
            # A value orjson refuses — a lone surrogate (a file name Python could not decode,
            # in an error message), an integer past 64 bits (a bad server's token count):
            # the line is kept with that character replaced, that number held to the int64
            # range results.parquet stores; the row is never lost over it.
            return orjson.dumps({name: _encodable(value) for name, value in asdict(self).items()})

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def row_credits(credits: float | None, credits_computed: float | None) -> float | None:
    """What a row cost: the API's ``credits_consumed`` when it said (0.0 included: a free
    answer stays free), else the formula's value."""
    return credits if credits is not None else credits_computed


def record_credits(record: dict[str, Any]) -> float:
    """``row_credits`` of a journal record, 0.0 when neither is known."""
    billed = row_credits(record.get("credits"), record.get("credits_computed"))
    return float(billed) if billed is not None else 0.0


def extra_of(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record's ``extra`` JSON as a dict; whatever will not parse is kept, not lost."""
    raw = record.get("extra")
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"unparsed_extra": raw}
    return value if isinstance(value, dict) else {"extra": value}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _encodable(value: Any) -> Any:
    """``value`` as orjson takes it: strings made valid UTF-8 (lone surrogates replaced),
    integers held to the int64 range."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return min(max(value, _INT64_MIN), _INT64_MAX)
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value
