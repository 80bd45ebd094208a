"""A manifest record becomes a ``Row``: which shape it has, its id, its media, its checks.

Which shape a row has, first match wins:
1. OpenAI Batch line: ``body`` is an object (``{custom_id, method, url, body}``).
2. ``messages``: OpenAI chat messages (a list, or a JSON string of one).
3. the job's ``prompt_template`` filled from the row's columns (``{title}``); the template may
   use any column, ``prompt`` included.
4. ``prompt`` (+ optional ``system`` and ``media``).
``media`` and the job's ``media_columns`` go with shapes 3 and 4 only. Shapes 2-4 may also
carry per-row settings (``settings``: model, reasoning effort, …); the job may name its own
columns for them and for ``system`` and ``messages``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.manifest.job import JobSpec
from batchrun.manifest.schemas import row_schema
from batchrun.manifest.settings import (
    REQUEST_SETTINGS,
    BadSetting,
    RowSettings,
    column_of,
    row_settings,
)
from batchrun.manifest.template import BadRow, Template, fill_template

ID_KEYS = ("id", "custom_id")


NEEDS = (
    "a row needs `messages`, or `prompt` (+ optional `system`, `media`), or the columns of "
    "the job's prompt_template, or an OpenAI batch `body`"
)


@dataclass(slots=True)
class Row:
    """One manifest row, ready for the request builder (or carrying why it is not).

    ``media`` lists every media reference of the row: for the prompt and template shapes these
    are attached after the text; for ``messages`` and batch rows they are the ``image_url``
    URLs already inside the messages (listed for estimates and checks, not attached again).

    Treated as a value (nothing changes a row once read) but not frozen: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``, six times the
    cost of a plain one (4.5 against 0.76 us a row here), and one is built per manifest line.
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
    settings: RowSettings | None = None  # what the row asks for itself (None: the job's)
    # The JSON Schema its answer must fit (the row's own, else the job's output_schema).
    output_schema: Mapping[str, Any] | None = None
    # Turns appended after the row's messages: a structured answer asked again.
    extra_turns: tuple[dict[str, Any], ...] = ()


def id_key_of(record: Mapping[str, Any]) -> str | None:
    """Which column holds the row's id (``id``, else ``custom_id``)."""
    for key in ID_KEYS:
        if record.get(key) is not None:
            return key
    return None


def drop_nulls(value: Any) -> Any:
    """Arrow structs give every field to every row; absent ones come back as None: drop them."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def build_row(
    record: dict[str, Any],
    line: int,
    unit: str,
    job: JobSpec,
    template: Template | None,
) -> Row:
    """The row of ``record``, on ``unit`` ("line", "row") ``line`` of its manifest: a row
    that says what is wrong with it (``error``) when it cannot be sent. The place is named
    only then ("line 12"; id "line-12" for a row without one), not for every row."""
    try:
        row_id, id_key = _row_id(record)
    except BadRow as exc:
        return Row(id=f"{unit}-{line}", line=line, error=f"{unit} {line}: {exc}")
    try:
        return _shape(record, row_id, id_key, line, job, template)
    except BadRow as exc:
        return Row(
            id=row_id, line=line, error=f"{unit} {line}: {exc}", fields=_rest(record, (id_key,))
        )


def _row_id(record: Mapping[str, Any]) -> tuple[str, str]:
    for key in ID_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRow(f"{key} must be a string or an integer, not {type_name(value)}")
        text = str(value)
        if not text.strip():
            raise BadRow(f"{key} is empty")
        return text, key
    raise BadRow("missing `id` (or `custom_id`)")


def _shape(
    record: dict[str, Any],
    row_id: str,
    id_key: str,
    line: int,
    job: JobSpec,
    template: Template | None,
) -> Row:
    body = record.get("body")
    if isinstance(body, str) and template is None and ("url" in record or "method" in record):
        body = _decode_json(body, "body")
    if isinstance(body, Mapping):
        return _batch_row(record, body, row_id, id_key, line)

    columns = job.columns
    try:
        settings = (row_settings(record, columns)
                    if columns or not _SETTING_KEYS.isdisjoint(record) else None)
    except BadSetting as exc:
        raise BadRow(str(exc)) from None
    if settings is not None and settings.model is not None and not job.prices(settings.model):
        raise BadRow(
            f"column {column_of(columns, 'model')} = {settings.model!r}: batchrun knows no price "
            f"for this model; use a model of the catalog, or make it the job's model and give "
            f"its price (price = {{input = …, output = …}})")
    messages_key, system_key, setting_keys = _keys(columns)
    output_schema = row_schema(record, job) if job.output_schema or columns or (
        "output_schema" in record) else None
    used = (id_key, *setting_keys)
    if record.get(messages_key) is not None:
        messages, refs = _check_messages(record[messages_key], messages_key)
        if record.get("media") is not None:
            raise BadRow(
                "`media` goes with `prompt`; in a `messages` row put image_url parts in the "
                "messages"
            )
        return Row(
            id=row_id,
            line=line,
            messages=messages,
            system=_optional_str(record, system_key),
            media=refs,
            fields=_rest(record, (*used, messages_key, system_key, "media")),
            settings=settings,
            output_schema=output_schema,
        )

    if template is not None:
        prompt = fill_template(template, record)
        return Row(
            id=row_id,
            line=line,
            prompt=prompt,
            system=_optional_str(record, system_key),
            media=_media_refs(record, job),
            fields=_rest(record, used),
            settings=settings,
            output_schema=output_schema,
        )

    if record.get("prompt") is not None:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise BadRow(f"prompt must be a string, not {type_name(prompt)}")
        media = _media_refs(record, job)
        if not prompt.strip() and not media:
            raise BadRow("prompt is empty and the row has no media")
        return Row(
            id=row_id,
            line=line,
            prompt=prompt,
            system=_optional_str(record, system_key),
            media=media,
            fields=_rest(record, (*used, "prompt", system_key, "media")),
            settings=settings,
            output_schema=output_schema,
        )

    raise BadRow(f"no content: {NEEDS}")


# Keys that may hold a setting under its own name: a row without any (and a job without a
# column map) skips the settings check.
_SETTING_KEYS = frozenset(REQUEST_SETTINGS)


def _keys(columns: Mapping[str, str]) -> tuple[str, str, tuple[str, ...]]:
    """The columns of messages and system, and those of the settings (the job's names)."""
    if not columns:
        return _OWN_KEYS  # most jobs: the settings' own names, without a lookup per row
    settings = tuple(column_of(columns, setting) for setting in (*REQUEST_SETTINGS,
                                                                 "output_schema"))
    return column_of(columns, "messages"), column_of(columns, "system"), settings


_OWN_KEYS = ("messages", "system", (*REQUEST_SETTINGS, "output_schema"))


def _batch_row(
    record: dict[str, Any], body: Mapping[str, Any], row_id: str, id_key: str, line: int
) -> Row:
    method = record.get("method")
    if method is not None and (not isinstance(method, str) or method.upper() != "POST"):
        raise BadRow(f"method must be POST, not {method!r}")
    url = record.get("url")
    if url is not None and (
        not isinstance(url, str) or not url.split("?")[0].rstrip("/").endswith("/chat/completions")
    ):
        raise BadRow(f"url must end with /chat/completions (batchrun sends chat completions), "
                   f"not {url!r}")
    if "messages" not in body:
        raise BadRow("body has no `messages`")
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
        raise BadRow(f"{name} must be a list of messages, not {type_name(value)}")
    if not value:
        raise BadRow(f"{name} is empty")
    refs: list[str] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        at = f"{name}[{index}]"
        if not isinstance(message, Mapping):
            raise BadRow(f"{at} must be an object with role and content, not {type_name(message)}")
        message = message if isinstance(message, dict) else dict(message)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise BadRow(f"{at}.role must be a non-empty string, not {type_name(role)}")
        content = message.get("content")
        if content is None:
            if role == "assistant" and message.get("tool_calls"):
                messages.append(message)
                continue
            raise BadRow(f"{at}.content is missing")
        if isinstance(content, list | tuple):
            refs.extend(_check_parts(content, f"{at}.content"))
        elif not isinstance(content, str):
            raise BadRow(f"{at}.content must be a string or a list of parts, "
                       f"not {type_name(content)}")
        messages.append(message)
    return tuple(messages), tuple(refs)


def _check_parts(parts: Iterable[Any], name: str) -> list[str]:
    refs: list[str] = []
    for index, part in enumerate(parts):
        at = f"{name}[{index}]"
        if not isinstance(part, Mapping):
            raise BadRow(f"{at} must be an object with a type, not {type_name(part)}")
        part_type = part.get("type")
        if not isinstance(part_type, str):
            raise BadRow(f"{at}.type must be a string, not {type_name(part_type)}")
        if part_type == "text" and not isinstance(part.get("text"), str):
            raise BadRow(f"{at}.text must be a string, not {type_name(part.get('text'))}")
        if part_type == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url:
                raise BadRow(f"{at}.image_url.url must be a URL or path string, "
                           f"not {type_name(url)}")
            refs.append(url)
    return refs


def _media_refs(record: Mapping[str, Any], job: JobSpec) -> tuple[str, ...]:
    refs = list(_media_list(record.get("media"), "media"))
    for column in job.media_columns:
        if column not in record:
            raise BadRow(f"media column {column!r} is missing")
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
                raise BadRow(f"{name}[{index}] must be a path or URL string, not {type_name(item)}")
        return list(value)
    raise BadRow(f"{name} must be a path/URL string or a list of them, not {type_name(value)}")


def _optional_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRow(f"{key} must be a string, not {type_name(value)}")
    return value


def _decode_json(text: str, name: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRow(f"{name} is a string but not valid JSON ({exc})") from None


def _rest(record: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in used}


def type_name(value: Any) -> str:
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
