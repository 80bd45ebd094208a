"""``JobSpec``: what to ask and how, loaded from ``jobs/*.toml`` with command-line overrides."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.core.errors import InputError
from batchrun.cost.catalog import DEFAULT_MODEL, Price, UnknownModel, is_priced, price_for
from batchrun.manifest.job_price import job_price
from batchrun.manifest.settings import REASONING_EFFORTS, check_column_map
from batchrun.media.files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_REQUEST_BYTES

DEFAULT_ENDPOINT = "https://api.aivideoapi.ai/v1"
ENDPOINT_ENV = "BATCHRUN_ENDPOINT"
SCHEMA_RESPONSE_FORMATS = ("auto", "always", "never")
STREAM_USAGE = ("auto", "ask", "never")


@dataclass(frozen=True)
class JobSpec:
    """Every knob of a run. Field defaults are the documented defaults."""

    name: str = "job"
    model: str = DEFAULT_MODEL
    endpoint: str | None = None
    # The gateway streams unless told otherwise (https://api.aivideoapi.ai); streaming also
    # keeps long reasoning
    # calls alive through proxies that cut idle connections.
    stream: bool = True
    include_thoughts: bool = True
    reasoning_effort: str | None = None  # None: leave the API default (high)
    google_search: bool = False
    system: str | None = None
    prompt_template: str | None = None
    media_columns: tuple[str, ...] = ()
    # Merged into every request body last, for fields the gateway adds later.
    extra_body: dict[str, Any] = field(default_factory=dict)
    # Per-row settings under the manifest's own column names: setting -> column
    # (manifest/settings.py lists the settings); unnamed settings use their own name.
    columns: dict[str, str] = field(default_factory=dict)
    # Structured output: a JSON Schema file the answers must fit (relative paths are from the
    # job file's folder); an answer that does not is asked again up to schema_retries times.
    output_schema: str | None = None
    schema_retries: int = 2
    # Whether the schema also goes as ``response_format`` (json_schema): "auto" only where the
    # endpoint is known to accept it (the gateway's API reference lists no response_format).
    schema_response_format: str = "auto"
    # Ask for usage on streams (stream_options.include_usage), which OpenAI and vLLM send only
    # when asked: "ask", "never", or "auto" = ask unless it is the gateway's API, by its host
    # or its model (it sends usage on every stream and documents no stream_options).
    stream_usage: str = "auto"
    expected_output_tokens: int = 500
    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 8
    max_retry_wait_s: float = 60.0
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 300.0
    # First byte sent to last byte read; long enough for high-effort reasoning on a 1M-token
    # prompt, short enough that a stream trickling keep-alives forever is given up.
    request_timeout_s: float = 900.0
    # Circuit breaker (batchrun/breaker.py): stop (exit 3) when the first N rows all fail the
    # same non-retryable way, or when the error rate of the last N rows reaches the rate.
    # 0 turns a rule off.
    breaker_first: int = 20
    breaker_window: int = 200
    breaker_rate: float = 0.5
    max_credits: float | None = None
    # Output tokens the budget reserves per request; unset: the model's output limit (a true
    # bound). Smaller reserves less, but an answer that overruns it can pass the cap.
    max_output_tokens_bound: int | None = None
    confirm_above: float | None = None
    media_root: str | None = None
    # Bytes of encoded request bodies in flight at once (peak memory follows it).
    media_budget_bytes: int = 256 * 1024 * 1024
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # one local media file, before base64
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # one encoded request body
    price: Price | None = None

    def with_overrides(self, **overrides: Any) -> JobSpec:
        """A copy with the given non-None fields replaced (command-line flags win)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def resolved_price(self) -> Price:
        """The job's own price (``price`` / ``[job.pricing]``), else the catalog's price of its
        model; InputError for a model neither prices (never a silent guess)."""
        try:
            return price_for(self.model, self._own_prices())
        except UnknownModel as exc:
            raise InputError(str(exc)) from None

    def prices(self, model: str) -> bool:
        """Whether a row may ask for ``model``: the catalog prices it, or the job does."""
        return is_priced(model, self._own_prices())

    def _own_prices(self) -> dict[str, Price] | None:
        return {self.model: self.price} if self.price else None

    def resolved_endpoint(self) -> str:
        """--endpoint / job file, then BATCHRUN_ENDPOINT, then the gateway's address."""
        endpoint = self.endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        return endpoint.rstrip("/")

    def validate(self) -> None:
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise InputError(
                f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, "
                f"not {self.reasoning_effort!r}"
            )
        if (wrong := check_column_map(self.columns)) is not None:
            raise InputError(wrong)
        if self.concurrency < 1:
            raise InputError("concurrency must be at least 1")
        if self.schema_retries < 0:
            raise InputError("schema_retries must be 0 or more")
        if self.stream_usage not in STREAM_USAGE:
            raise InputError(f"stream_usage must be one of {', '.join(STREAM_USAGE)}, not "
                             f"{self.stream_usage!r}")
        if self.schema_response_format not in SCHEMA_RESPONSE_FORMATS:
            raise InputError(f"schema_response_format must be one of "
                             f"{', '.join(SCHEMA_RESPONSE_FORMATS)}, not "
                             f"{self.schema_response_format!r}")
        if self.max_attempts < 1:
            raise InputError("max_attempts must be at least 1")
        for name in ("media_budget_bytes", "max_file_bytes", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1 byte")
        for name in ("rpm", "tpm", "max_credits", "max_output_tokens_bound",
                     "connect_timeout_s", "read_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be positive, not {value}")
        if self.breaker_first < 0 or self.breaker_window < 0:
            raise InputError("breaker_first and breaker_window must be 0 (off) or more")
        if not 0.0 < self.breaker_rate <= 1.0:
            raise InputError(f"breaker_rate must be in (0, 1], not {self.breaker_rate}")

    def describe(self) -> dict[str, Any]:
        """The spec as plain data for run metadata (never holds a key)."""
        data = dataclasses.asdict(self)
        data["media_columns"] = list(self.media_columns)
        return data


_FIELDS = {f.name: f for f in dataclasses.fields(JobSpec)}


def load_job(path: str | Path | None) -> JobSpec:
    """Read a job spec TOML file; unknown keys are an input error naming them."""
    if path is None:
        return JobSpec()
    job_path = Path(path)
    try:
        raw = tomllib.loads(job_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"job file not found: {job_path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"job file {job_path} is not valid TOML: {exc}") from None
    spec = job_from_mapping(raw, source=str(job_path))
    if spec.output_schema is not None and not Path(spec.output_schema).is_absolute():
        # A schema file beside the job file is found wherever the command runs.
        spec = dataclasses.replace(
            spec, output_schema=str((job_path.parent / spec.output_schema).resolve()))
    return spec


def job_from_mapping(raw: dict[str, Any], *, source: str = "job") -> JobSpec:
    data = dict(raw.get("job", raw))  # accept a [job] table or top-level keys
    price = job_price(data.pop("price", None), data.pop("pricing", None), source)
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InputError(
            f"{source}: unknown job field(s) {', '.join(unknown)}; "
            f"known fields: {', '.join(sorted({*_FIELDS, 'pricing'}))}"
        )
    check_field_types(data, source)
    if "media_columns" in data:
        data["media_columns"] = tuple(data["media_columns"])
    if price is not None:
        data["price"] = price
    try:
        spec = JobSpec(**data)
    except TypeError as exc:
        raise InputError(f"{source}: {exc}") from None
    spec.validate()
    return spec


# What a TOML value must be for each field: a wrong type is an input error naming the field,
# never a TypeError deep inside the run.
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
               list: "a list of strings", dict: "a table"}


def _expected_types(annotation: str) -> tuple[type, ...] | None:
    kinds: list[type] = []
    for part in (piece.strip() for piece in annotation.split("|")):
        if part == "None":
            continue
        base = part.split("[", 1)[0]
        kind = {"str": str, "bool": bool, "int": int, "float": float, "tuple": list,
                "dict": dict}.get(base)
        if kind is None:
            return None  # a type TOML cannot hold (Price): checked where it is built
        kinds.append(kind)
    return tuple(kinds)


def check_field_types(data: dict[str, Any], source: str) -> None:
    """Raise ``InputError`` for the first field whose TOML value has the wrong type."""
    for name, value in data.items():
        spec_field = _FIELDS.get(name)
        if spec_field is None:
            continue
        kinds = _expected_types(str(spec_field.type))
        if kinds is None:
            continue
        if value is None and "None" in str(spec_field.type):
            continue
        ok = any(_is(value, kind) for kind in kinds)
        if ok and list in kinds and isinstance(value, list):
            ok = all(isinstance(item, str) for item in value)
        if not ok:
            wanted = " or ".join(_TYPE_NAMES[kind] for kind in kinds)
            raise InputError(f"{source}: job field {name} must be {wanted}, not {value!r}")


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
