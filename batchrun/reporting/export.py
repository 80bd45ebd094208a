"""``batchrun export``: the latest result of every row, as Parquet or JSONL, in manifest order.

Export compacts first (results.parquet is rewritten from the journal), then streams: results
come from the journal one by one, the manifest (``--with-input``) is read alongside in the same
order, and output is written in batches, so memory does not grow with the run.

Formats:
- ``results``: the results schema (JSONL: one object per row, timestamps in ISO 8601 UTC);
- ``openai-batch`` (JSONL only): the OpenAI Batch API's output lines, ``{"id", "custom_id",
  "response": {"status_code", "request_id", "body"}, "error"}``. An answer or an error answer
  of the API is a ``response`` (``body`` is the ``chat.completion``, or ``{"error": …}``);
  an error that got no answer (a media problem, retries ran out on a dropped connection) is
  ``"response": null`` with ``"error": {"code", "message"}``. ``request_id`` holds the
  completion id: batchrun keeps no HTTP request ids.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.core.result import RESULTS_SCHEMA, STATUS_OK, extra_of
from batchrun.manifest.reader import iter_records, manifest_fingerprint, manifest_format
from batchrun.manifest.rows import id_key_of
from batchrun.reporting.flatten import flatten_file, run_schema
from batchrun.reporting.status import run_summary
from batchrun.store.cache import REUSED_EXTRA_KEY
from batchrun.store.compact import BATCH_ROWS, file_metadata, json_record, parquet_record
from batchrun.store.files import write_output
from batchrun.store.rundir import RunDir
from batchrun.store.summary import RunSummary

FORMATS = ("results", "openai-batch")
_RESULT_NAMES = frozenset(RESULTS_SCHEMA.names)
_JSON_TEXT = "json"  # an input column of mixed or nested values, written as JSON text


def export_metadata(info: dict[str, Any], summary: RunSummary) -> dict[str, Any]:
    return {
        "batchrun_version": info.get("batchrun_version"),
        "job": info.get("job"),
        "model": (info.get("job") or {}).get("model"),
        "endpoint": info.get("endpoint"),
        "manifest": info.get("manifest"),
        "manifest_fingerprint": info.get("manifest_fingerprint"),
        "job_versions": info.get("job_versions"),
        "totals": summary.as_dict(),
    }


def export_results(
    run: RunDir, output: Path, *, fmt: str = "results", with_input: bool = False,
    flatten: bool = False,
) -> int:
    """Compact the journal, then write every row's latest result to ``output``; returns the
    number of rows. The file appears whole or not at all (written aside, then renamed).
    ``flatten``: the job's output_schema fields as typed columns too (``reporting.flatten``)."""
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        raise InputError(f"--output must end in .parquet or .jsonl, not {output.name!r}")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "openai-batch" and (suffix != ".jsonl" or with_input):
        raise InputError("--format openai-batch writes the OpenAI Batch output shape: a .jsonl "
                         "file, without --with-input (that shape has no place for input columns)")
    info = run.read_info()
    schema = run_schema(info) if flatten else None
    if flatten and (fmt != "results" or output.resolve() == run.results_path.resolve()):
        raise InputError("--flatten writes a results export (not openai-batch), to a file other "
                         "than the run's own results.parquet")
    manifest = _checked_manifest(info) if with_input else None
    summary = run_summary(run, info, run.load_index())
    metadata = export_metadata(info, summary)
    rows = run.compact(metadata)
    if suffix == ".parquet" and manifest is None and (
        output.resolve() == run.results_path.resolve()
    ):
        return rows
    write_output(output, lambda path: _write(run, info, manifest, metadata, fmt, schema, path))
    return rows


def _write(run: RunDir, info: dict[str, Any], manifest: Path | None, metadata: dict[str, Any],
           fmt: str, schema: Any, output: Path) -> None:
    """The export's file, written beside ``output`` and renamed over it when whole."""
    parquet = output.suffix.lower() == ".parquet"
    tmp = output.with_name(output.name + ".tmp")
    try:
        if parquet and manifest is None:
            shutil.copyfile(run.results_path, tmp)
        elif parquet:
            assert manifest is not None
            _write_joined_parquet(run, manifest, metadata, tmp)
        else:
            _write_jsonl(run, info, manifest, fmt, tmp)
        if schema is not None:
            flatten_file(tmp, schema, parquet=parquet)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _checked_manifest(info: dict[str, Any]) -> Path:
    """The run's manifest, if it is still the same file (rows are joined by line)."""
    manifest = Path(str(info.get("manifest") or ""))
    if not manifest.is_file():
        raise InputError(f"--with-input needs the run's manifest, {manifest}, which is gone")
    if manifest_fingerprint(manifest) != info.get("manifest_fingerprint"):
        raise InputError(f"--with-input: {manifest} has changed since the run began; its rows "
                         "can no longer be matched to the results")
    return manifest


# --- joining the manifest back --------------------------------------------------------------
def _joined(run: RunDir, manifest: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(journal record, the manifest row's own columns) in manifest order."""
    inputs = iter_records(manifest)
    current = next(inputs, None)
    for line, record in run.latest():
        while current is not None and line and current[0] < line:
            current = next(inputs, None)
        if line and current is not None and current[0] == line:
            yield record, input_columns(current[1])
        else:
            yield record, {}  # a journal line written without its manifest line


def input_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row's columns to join: its id column dropped (the results have ``id``),
    a name the results use prefixed with ``input_``."""
    id_key = id_key_of(row)
    return {(f"input_{name}" if name in _RESULT_NAMES else name): value
            for name, value in row.items() if name != id_key}


def _input_schema(manifest: Path) -> list[tuple[str, pa.DataType, str]]:
    """(column, Arrow type, kind) of the manifest's own columns, in their first-seen order.

    Parquet keeps its types. JSONL is read once first: a column whose values are all strings,
    all booleans, all integers or all numbers gets that type; anything else (objects, lists,
    mixed) is written as JSON text.
    """
    if manifest_format(manifest) == "parquet":
        schema = pq.read_schema(manifest)
        names = schema.names
        id_key = "id" if "id" in names else ("custom_id" if "custom_id" in names else None)
        return [((f"input_{f.name}" if f.name in _RESULT_NAMES else f.name), f.type, "arrow")
                for f in schema if f.name != id_key]
    kinds: dict[str, set[str]] = {}
    for _, row in iter_records(manifest):
        for name, value in input_columns(row).items():
            kinds.setdefault(name, set()).add(_kind(value))
    columns = []
    for name, seen in kinds.items():
        seen.discard("null")
        if seen == {"str"}:
            columns.append((name, pa.string(), "str"))
        elif seen == {"bool"}:
            columns.append((name, pa.bool_(), "bool"))
        elif seen == {"int"}:
            columns.append((name, pa.int64(), "int"))
        elif seen and seen <= {"int", "float"}:
            columns.append((name, pa.float64(), "float"))
        else:
            columns.append((name, pa.string(), _JSON_TEXT))
    return columns


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "big"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "other"


def _write_joined_parquet(run: RunDir, manifest: Path, metadata: dict[str, Any],
                          path: Path) -> None:
    columns = _input_schema(manifest)
    schema = pa.schema(list(RESULTS_SCHEMA) + [pa.field(name, kind_type)
                                               for name, kind_type, _ in columns])
    schema = schema.with_metadata(file_metadata(metadata))
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        results: list[dict[str, Any]] = []
        inputs: list[dict[str, Any]] = []

        def flush() -> None:
            table = pa.Table.from_pylist(results, schema=RESULTS_SCHEMA)
            for name, arrow_type, kind in columns:
                values = [row.get(name) for row in inputs]
                if kind == _JSON_TEXT:
                    values = [v if v is None or isinstance(v, str) else orjson.dumps(v).decode()
                              for v in values]
                table = table.append_column(pa.field(name, arrow_type),
                                            pa.array(values, type=arrow_type))
            writer.write_table(table.replace_schema_metadata(schema.metadata))
            results.clear()
            inputs.clear()

        for record, row_inputs in _joined(run, manifest):
            results.append(parquet_record(record))
            inputs.append(row_inputs)
            if len(results) >= BATCH_ROWS:
                flush()
        if results:
            flush()


# --- JSONL ------------------------------------------------------------------------------------
def _write_jsonl(run: RunDir, info: dict[str, Any], manifest: Path | None, fmt: str,
                 path: Path) -> None:
    seed = str(info.get("manifest_fingerprint") or "")
    rows: Iterator[tuple[dict[str, Any], dict[str, Any]]]
    if manifest is not None:
        rows = _joined(run, manifest)
    else:
        rows = ((record, {}) for _, record in run.latest())
    with open(path, "wb") as out:
        for record, row_inputs in rows:
            if fmt == "openai-batch":
                line = openai_batch_line(record, seed)
            else:
                line = {**json_record(record), **row_inputs}
            out.write(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS) + b"\n")


def openai_batch_line(record: dict[str, Any], seed: str) -> dict[str, Any]:
    """One line of an OpenAI Batch output file for a journal record (see the module doc)."""
    custom_id = str(record.get("id"))
    line_id = "batch_req_" + hashlib.sha256(f"{seed}\0{custom_id}".encode()).hexdigest()[:32]
    if record.get("status") == STATUS_OK:
        response = {"status_code": record.get("http_status") or 200,
                    "request_id": record.get("response_id"), "body": chat_completion(record)}
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
    error = {"code": record.get("error_code") or "error",
             "message": record.get("error_message") or ""}
    status = record.get("http_status")
    if status:
        body = {"error": {**error, "type": record.get("error_type")}}
        response = {"status_code": status, "request_id": None, "body": body}
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
    return {"id": line_id, "custom_id": custom_id, "response": None, "error": error}


def chat_completion(record: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` body an ok row was answered with, rebuilt from its columns and
    the fields kept in ``extra`` (response.py's layout)."""
    extra = extra_of(record)
    reused = extra.pop(REUSED_EXTRA_KEY, None)
    message: dict[str, Any] = {"role": "assistant", "content": record.get("content")}
    if record.get("thoughts"):
        message["reasoning_content"] = record["thoughts"]
    _merge(message, extra.pop("message", None))
    choice: dict[str, Any] = {"index": 0, "message": message,
                              "finish_reason": record.get("finish_reason")}
    _merge(choice, extra.pop("choice", None))
    more_choices = extra.pop("choices", None)
    choices = [choice] + (more_choices if isinstance(more_choices, list) else [])
    usage: dict[str, Any] = {name: record.get(name) for name in
                             ("prompt_tokens", "completion_tokens", "total_tokens")}
    if record.get("reasoning_tokens") is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": record["reasoning_tokens"]}
    usage_extra = extra.pop("usage", None)
    if isinstance(usage_extra, dict):
        details = usage_extra.pop("completion_tokens_details", None)
        usage.update(usage_extra)
        if isinstance(details, dict):
            usage["completion_tokens_details"] = {**details,
                                                  **usage.get("completion_tokens_details", {})}
    credits = record.get("credits")
    if isinstance(reused, dict):  # what the API charged when it answered (the earlier run)
        credits = reused.get("credits")
    finished = record.get("finished_at")
    body: dict[str, Any] = {
        "id": record.get("response_id"),
        "object": "chat.completion",
        "created": int(finished) if isinstance(finished, int | float) else None,
        "model": record.get("model"),
        "choices": choices,
        "usage": usage,
        "credits_consumed": credits,
    }
    for name, value in extra.items():
        if not name.startswith("batchrun_"):
            body.setdefault(name, value)
    return body


def _merge(target: dict[str, Any], more: Any) -> None:
    if isinstance(more, dict):
        target.update(more)
