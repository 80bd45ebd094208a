"""Streaming manifest readers: JSONL, Parquet and OpenAI-batch lines become ``Row`` values.

A manifest is never loaded whole: JSONL is read line by line, Parquet batch by batch. A row
that cannot be used becomes ``Row(error=...)`` (a row error; the run goes on). Only problems of
the whole file raise ``InputError``: unknown format, unreadable, duplicate ids, a bad
``prompt_template``, Parquet columns that cannot work.

Which shape a row has, first match wins:
1. OpenAI Batch line: ``body`` is an object (``{custom_id, method, url, body}``).
2. ``messages``: OpenAI chat messages (a list, or a JSON string of one).
3. the job's ``prompt_template`` filled from the row's columns (``{title}``); the template may
   use any column, ``prompt`` included.
4. ``prompt`` (+ optional ``system`` and ``media``).
``media`` and the job's ``media_columns`` go with shapes 3 and 4 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import string
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
# A longer line becomes a row error without ever being held whole. Media belongs in files
# referenced by path, so real lines stay far below this.
MAX_LINE_BYTES = 128 * 1024 * 1024
_CHUNK = 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_ID_KEYS = ("id", "custom_id")
_NEEDS = (
    "a row needs `messages`, or `prompt` (+ optional `system`, `media`), or the columns of "
    "the job's prompt_template, or an OpenAI batch `body`"
)


@dataclass(frozen=True)
class Row:
    """One manifest row, ready for the request builder (or carrying why it is not).

    ``media`` lists every media reference of the row: for the prompt and template shapes these
    are attached after the text; for ``messages`` and batch rows they are the ``image_url``
    URLs already inside the messages (listed for estimates and checks, not attached again).
    """

    id: str
    line: int  # 1-based line number (JSONL) or 1-based row number (Parquet)
    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    system: str | None = None
    media: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    error: str | None = None


class _Bad(Exception):
    """A problem of one row; becomes ``Row.error``."""


@dataclass(frozen=True)
class _Template:
    text: str
    columns: tuple[str, ...]


# --------------------------------------------------------------------------- public functions


def manifest_format(path: Path) -> str:
    """``"jsonl"`` or ``"parquet"`` by extension; anything else is an input error."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    known = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES)
    raise InputError(f"manifest {path}: unknown extension {suffix or '(none)'!r}; use {known}")


def iter_rows(
    path: Path,
    job: JobSpec,
    *,
    batch_size: int = 4096,
    check_duplicates: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    done_lines: bytes | None = None,
) -> Iterator[Row]:
    """Stream the rows of a manifest. File-level problems raise ``InputError`` at once.

    ``done_lines[n] == 1``: line n (JSONL) or row n (Parquet, 1-based) is passed over unparsed,
    which is how a resume walks past the rows already done.
    """
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    template = _compile_template(job.prompt_template)
    if fmt == "parquet":
        _check_parquet_schema(path, job, template)
    rows = _source(path, fmt, job, template, batch_size, max_line_bytes, done_lines)
    if not check_duplicates:
        return rows
    return _check_unique(
        rows,
        rescan=lambda: _source(path, fmt, job, template, batch_size, max_line_bytes),
        unit="lines" if fmt == "jsonl" else "rows",
    )


def manifest_fingerprint(path: Path) -> str:
    """sha256 hex of the file's bytes, read in chunks."""
    path = Path(path)
    _check_readable(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def count_rows(path: Path) -> int:
    """Rows in the manifest: Parquet metadata, or the non-blank lines of a JSONL file."""
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    if fmt == "parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    rows = 0
    line_has_text = False
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            pieces = chunk.split(b"\n")
            # Every piece but the last ends a line; the last may go on in the next chunk.
            for piece in pieces[:-1]:
                if line_has_text or (piece and not piece.isspace()):
                    rows += 1
                line_has_text = False
            tail = pieces[-1]
            line_has_text = line_has_text or bool(tail and not tail.isspace())
    return rows + (1 if line_has_text else 0)


def iter_records(path: Path, *, batch_size: int = 4096) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, the row as written) for every row that is an object: the
    manifest's own columns, for joining results back onto them (``export --with-input``)."""
    path = Path(path)
    if manifest_format(path) == "parquet":
        parquet = pq.ParquetFile(path)
        with contextlib.closing(parquet):
            row_no = 0
            for batch in parquet.iter_batches(batch_size=batch_size):
                for record in batch.to_pylist():
                    row_no += 1
                    yield row_no, record
        return
    with open(path, "rb") as f:
        for line_no, raw in _read_lines(f, MAX_LINE_BYTES):
            if raw is None or not raw.strip():
                continue
            if line_no == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM) :]
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield line_no, record


def id_key_of(record: Mapping[str, Any]) -> str | None:
    """Which column holds the row's id (``id``, else ``custom_id``)."""
    for key in _ID_KEYS:
        if record.get(key) is not None:
            return key
    return None


# --------------------------------------------------------------------------- file checks


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if not path.is_file():
        raise InputError(f"manifest {path} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"manifest {path} cannot be read: {exc.strerror or exc}") from None


def _source(
    path: Path,
    fmt: str,
    job: JobSpec,
    template: _Template | None,
    batch_size: int,
    max_line_bytes: int,
    done_lines: bytes | None = None,
) -> Generator[Row, None, None]:
    if fmt == "jsonl":
        return _iter_jsonl(path, job, template, max_line_bytes, done_lines)
    return _iter_parquet(path, job, template, batch_size, done_lines)


def _check_unique(
    rows: Generator[Row, None, None],
    rescan: Callable[[], Generator[Row, None, None]],
    unit: str,
) -> Iterator[Row]:
    """Pass rows through; raise on the second occurrence of an id.

    Only the ids' 64-bit hashes are kept (about 70 bytes a row). A hash already seen triggers
    a rescan up to this row to find the first line, which also rules out hash collisions.
    """
    seen: set[int] = set()
    with contextlib.closing(rows):
        for row in rows:
            key = hash(row.id)
            if key in seen:
                first = _first_line_of(rescan(), row.id, row.line)
                if first is not None:
                    raise InputError(f"duplicate id {row.id!r} on {unit} {first} and {row.line}")
            seen.add(key)
            yield row


def _first_line_of(rows: Generator[Row, None, None], row_id: str, before: int) -> int | None:
    with contextlib.closing(rows):
        for row in rows:
            if row.line >= before:
                return None
            if row.id == row_id:
                return row.line
    return None


# --------------------------------------------------------------------------- JSONL


def _iter_jsonl(
    path: Path,
    job: JobSpec,
    template: _Template | None,
    max_line_bytes: int,
    done_lines: bytes | None = None,
) -> Generator[Row, None, None]:
    first_text_seen = False
    with open(path, "rb") as f:
        for line_no, raw in _read_lines(f, max_line_bytes, done_lines):
            where = f"line {line_no}"
            fallback_id = f"line-{line_no}"
            if raw is None:
                limit = _human_bytes(max_line_bytes)
                yield Row(
                    id=fallback_id,
                    line=line_no,
                    error=f"{where}: longer than {limit}; put media in files and give their paths",
                )
                continue
            if line_no == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM) :]
            if not raw or raw.isspace():
                continue
            if not first_text_seen:
                first_text_seen = True
                if raw[:64].lstrip().startswith(b"["):
                    raise InputError(
                        f"manifest {path} starts with a JSON array; batchrun reads JSON Lines: "
                        "one JSON object per line"
                    )
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Row(id=fallback_id, line=line_no, error=f"{where}: {_json_problem(raw, exc)}")
                continue
            if not isinstance(record, dict):
                yield Row(
                    id=fallback_id,
                    line=line_no,
                    error=f"{where}: expected a JSON object, got {_type_name(record)}",
                )
                continue
            yield _build_row(record, line_no, where, fallback_id, job, template)


def _read_lines(
    f: Any, max_line_bytes: int, done_lines: bytes | None = None
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; ``None`` for a line over the limit, skipped unread.

    Runs of lines marked in ``done_lines`` are read past without being yielded.
    """
    line_no = 0
    readline = f.readline
    limit = max_line_bytes + 1
    while True:
        if done_lines is not None and line_no + 1 < len(done_lines) and done_lines[line_no + 1]:
            end = done_lines.find(0, line_no + 1)
            if end < 0:
                end = len(done_lines)
            wanted = end - line_no - 1
            skipped = _skip_lines(f, wanted)
            line_no += skipped
            if skipped < wanted:
                return
            continue
        raw = readline(limit)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _read_past_line(f)
            yield line_no, None
            continue
        yield line_no, raw


def _skip_lines(f: Any, count: int) -> int:
    """Read past ``count`` lines by counting newlines in big chunks (no line is ever held
    whole); returns how many there were before the end of the file."""
    skipped = 0
    while skipped < count:
        start = f.tell()
        chunk = f.read(_CHUNK)
        if not chunk:
            return skipped
        newlines = chunk.count(b"\n")
        if skipped + newlines < count:
            skipped += newlines
            continue
        end = -1
        for _ in range(count - skipped):
            end = chunk.find(b"\n", end + 1)
        f.seek(start + end + 1)
        return count
    return skipped


def _read_past_line(f: Any) -> None:
    while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
        pass


def _json_problem(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1})"
    return f"invalid JSON ({exc})"


def _human_bytes(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size:,} bytes"


# --------------------------------------------------------------------------- Parquet

_COLUMN_RULES: dict[str, tuple[str, ...]] = {
    # column: what its Arrow type may be
    "id": ("string", "integer"),
    "custom_id": ("string", "integer"),
    "prompt": ("string",),
    "system": ("string",),
    "messages": ("string", "list"),
    "media": ("string", "list"),
}


def _type_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        return _type_kind(arrow_type.value_type)
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "list"
    if pa.types.is_struct(arrow_type):
        return "struct"
    return str(arrow_type)


def _check_parquet_schema(path: Path, job: JobSpec, template: _Template | None) -> None:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    names = set(schema.names)
    found = ", ".join(schema.names) or "(none)"
    if not names & set(_ID_KEYS):
        raise InputError(f"manifest {path} has no `id` or `custom_id` column; columns: {found}")
    has_body = "body" in names and _type_kind(schema.field("body").type) in ("struct", "string")
    if not (has_body or template or names & {"messages", "prompt"}):
        raise InputError(f"manifest {path}: no usable columns; {_NEEDS}. Columns: {found}")
    for name, allowed in _COLUMN_RULES.items():
        if name not in names:
            continue
        arrow_type = schema.field(name).type
        kind = _type_kind(arrow_type)
        if kind != "null" and kind not in allowed:
            raise InputError(
                f"manifest {path}: column {name!r} has type {arrow_type}; "
                f"it must hold {' or '.join(allowed)} values"
            )
    wanted = list(template.columns if template else ()) + list(job.media_columns)
    missing = [name for name in dict.fromkeys(wanted) if name not in names]
    if missing:
        raise InputError(
            f"manifest {path}: the job names column(s) {', '.join(map(repr, missing))}, "
            f"which it lacks; columns: {found}"
        )
    for name in job.media_columns:
        arrow_type = schema.field(name).type
        if _type_kind(arrow_type) not in ("string", "list", "null"):
            raise InputError(
                f"manifest {path}: media column {name!r} has type {arrow_type}; "
                "it must hold a path/URL string or a list of them"
            )


def _iter_parquet(
    path: Path,
    job: JobSpec,
    template: _Template | None,
    batch_size: int,
    done_lines: bytes | None = None,
) -> Generator[Row, None, None]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    row_no = 0
    with contextlib.closing(parquet):
        batch_iter = iter(parquet.iter_batches(batch_size=batch_size))
        while True:
            try:
                batch = next(batch_iter)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise InputError(
                    f"manifest {path}: cannot read rows after row {row_no}: {exc}"
                ) from None
            first = row_no + 1
            row_no += batch.num_rows
            numbers: list[int] | range = range(first, row_no + 1)
            if done_lines is not None:
                window = done_lines[first : row_no + 1]
                if len(window) == batch.num_rows and window.find(0) < 0:
                    continue
                keep = [at for at in range(batch.num_rows) if at >= len(window) or not window[at]]
                if len(keep) < batch.num_rows:
                    batch = batch.take(pa.array(keep, type=pa.int64()))
                    numbers = [first + at for at in keep]
            for number, record in zip(numbers, batch.to_pylist(), strict=True):
                for key in ("messages", "body"):
                    if isinstance(record.get(key), list | dict):
                        record[key] = _drop_nulls(record[key])
                yield _build_row(record, number, f"row {number}", f"row-{number}", job, template)


def _drop_nulls(value: Any) -> Any:
    """Arrow structs give every field to every row; absent ones come back as None: drop them."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# --------------------------------------------------------------------------- row shapes


def _build_row(
    record: dict[str, Any],
    line: int,
    where: str,
    fallback_id: str,
    job: JobSpec,
    template: _Template | None,
) -> Row:
    try:
        row_id, id_key = _row_id(record)
    except _Bad as exc:
        return Row(id=fallback_id, line=line, error=f"{where}: {exc}")
    try:
        return _shape(record, row_id, id_key, line, job, template)
    except _Bad as exc:
        return Row(
            id=row_id, line=line, error=f"{where}: {exc}", fields=_rest(record, (id_key,))
        )


def _row_id(record: Mapping[str, Any]) -> tuple[str, str]:
    for key in _ID_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _Bad(f"{key} must be a string or an integer, not {_type_name(value)}")
        text = str(value)
        if not text.strip():
            raise _Bad(f"{key} is empty")
        return text, key
    raise _Bad("missing `id` (or `custom_id`)")


def _shape(
    record: dict[str, Any],
    row_id: str,
    id_key: str,
    line: int,
    job: JobSpec,
    template: _Template | None,
) -> Row:
    body = record.get("body")
    if isinstance(body, str) and template is None and ("url" in record or "method" in record):
        body = _decode_json(body, "body")
    if isinstance(body, Mapping):
        return _batch_row(record, body, row_id, id_key, line)

    if record.get("messages") is not None:
        messages, refs = _check_messages(record["messages"], "messages")
        if record.get("media") is not None:
            raise _Bad(
                "`media` goes with `prompt`; in a `messages` row put image_url parts in the "
                "messages"
            )
        return Row(
            id=row_id,
            line=line,
            messages=messages,
            system=_optional_str(record, "system"),
            media=refs,
            fields=_rest(record, (id_key, "messages", "system", "media")),
        )

    if template is not None:
        prompt = _fill_template(template, record)
        return Row(
            id=row_id,
            line=line,
            prompt=prompt,
            system=_optional_str(record, "system"),
            media=_media_refs(record, job),
            fields=_rest(record, (id_key,)),
        )

    if record.get("prompt") is not None:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise _Bad(f"prompt must be a string, not {_type_name(prompt)}")
        media = _media_refs(record, job)
        if not prompt.strip() and not media:
            raise _Bad("prompt is empty and the row has no media")
        return Row(
            id=row_id,
            line=line,
            prompt=prompt,
            system=_optional_str(record, "system"),
            media=media,
            fields=_rest(record, (id_key, "prompt", "system", "media")),
        )

    raise _Bad(f"no content: {_NEEDS}")


def _batch_row(
    record: dict[str, Any], body: Mapping[str, Any], row_id: str, id_key: str, line: int
) -> Row:
    method = record.get("method")
    if method is not None and (not isinstance(method, str) or method.upper() != "POST"):
        raise _Bad(f"method must be POST, not {method!r}")
    url = record.get("url")
    if url is not None and (
        not isinstance(url, str) or not url.split("?")[0].rstrip("/").endswith("/chat/completions")
    ):
        raise _Bad(f"url must end with /chat/completions (batchrun sends chat completions), "
                   f"not {url!r}")
    if "messages" not in body:
        raise _Bad("body has no `messages`")
    messages, refs = _check_messages(body["messages"], "body.messages")
    return Row(
        id=row_id,
        line=line,
        messages=messages,
        media=refs,
        body=body,
        fields=_rest(record, (id_key, "method", "url", "body")),
    )


def _check_messages(value: Any, name: str) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """Validate OpenAI chat messages; return them and the image_url URLs they hold."""
    if isinstance(value, str):
        value = _decode_json(value, name)
    if not isinstance(value, list | tuple):
        raise _Bad(f"{name} must be a list of messages, not {_type_name(value)}")
    if not value:
        raise _Bad(f"{name} is empty")
    refs: list[str] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        at = f"{name}[{index}]"
        if not isinstance(message, Mapping):
            raise _Bad(f"{at} must be an object with role and content, not {_type_name(message)}")
        message = message if isinstance(message, dict) else dict(message)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _Bad(f"{at}.role must be a non-empty string, not {_type_name(role)}")
        content = message.get("content")
        if content is None:
            if role == "assistant" and message.get("tool_calls"):
                messages.append(message)
                continue
            raise _Bad(f"{at}.content is missing")
        if isinstance(content, list | tuple):
            refs.extend(_check_parts(content, f"{at}.content"))
        elif not isinstance(content, str):
            raise _Bad(f"{at}.content must be a string or a list of parts, "
                       f"not {_type_name(content)}")
        messages.append(message)
    return tuple(messages), tuple(refs)


def _check_parts(parts: Iterable[Any], name: str) -> list[str]:
    refs: list[str] = []
    for index, part in enumerate(parts):
        at = f"{name}[{index}]"
        if not isinstance(part, Mapping):
            raise _Bad(f"{at} must be an object with a type, not {_type_name(part)}")
        part_type = part.get("type")
        if not isinstance(part_type, str):
            raise _Bad(f"{at}.type must be a string, not {_type_name(part_type)}")
        if part_type == "text" and not isinstance(part.get("text"), str):
            raise _Bad(f"{at}.text must be a string, not {_type_name(part.get('text'))}")
        if part_type == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url:
                raise _Bad(f"{at}.image_url.url must be a URL or path string, "
                           f"not {_type_name(url)}")
            refs.append(url)
    return refs


def _media_refs(record: Mapping[str, Any], job: JobSpec) -> tuple[str, ...]:
    refs = list(_media_list(record.get("media"), "media"))
    for column in job.media_columns:
        if column not in record:
            raise _Bad(f"media column {column!r} is missing")
        refs.extend(_media_list(record[column], column))
    return tuple(refs)


def _media_list(value: Any, name: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise _Bad(f"{name}[{index}] must be a path or URL string, not {_type_name(item)}")
        return list(value)
    raise _Bad(f"{name} must be a path/URL string or a list of them, not {_type_name(value)}")


def _optional_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad(f"{key} must be a string, not {_type_name(value)}")
    return value


def _decode_json(text: str, name: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"{name} is a string but not valid JSON ({exc})") from None


def _rest(record: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in used}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- prompt_template

_ROOT_NAME = re.compile(r"[^.\[]*")


def _compile_template(text: str | None) -> _Template | None:
    """Check a ``str.format_map`` template once and list the columns it reads."""
    if text is None:
        return None
    columns: list[str] = []

    def walk(fmt: str, depth: int) -> None:
        try:
            parsed = list(string.Formatter().parse(fmt))
        except ValueError as exc:
            raise InputError(f"prompt_template is not a valid format string: {exc}") from None
        for _literal, field_name, spec, conversion in parsed:
            if field_name is None:
                continue
            match = _ROOT_NAME.match(field_name)
            root = match.group(0) if match else ""
            if not root or root.isdigit():
                raise InputError(
                    f"prompt_template has a positional field {{{field_name}}}; "
                    "name a column instead, like {title}"
                )
            if conversion not in (None, "r", "s", "a"):
                raise InputError(f"prompt_template: unknown conversion !{conversion} "
                                 f"in {{{field_name}}}")
            columns.append(root)
            if spec and depth < 2:
                walk(spec, depth + 1)

    walk(text, 0)
    return _Template(text=text, columns=tuple(dict.fromkeys(columns)))


def _fill_template(template: _Template, record: Mapping[str, Any]) -> str:
    for column in template.columns:
        if column not in record:
            raise _Bad(f"prompt_template needs column {column!r}, which this row lacks")
        if record[column] is None:
            raise _Bad(f"prompt_template needs column {column!r}, which is null in this row")
    try:
        return template.text.format_map(record)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise _Bad(f"prompt_template could not be filled from this row: {exc!r}") from None
