"""The fake model's JSON answers (pure): asked for a JSON Schema, it answers a value that fits,
deterministically from the request, except for a share of attempts (``bad_json_rate``)
answered the way real models go wrong: the JSON in code fences, thought text around it (both
recoverable by a careful client), a required field missing, or JSON cut short (neither is).

The schema is found where a client puts it: ``response_format.json_schema.schema`` (OpenAI's
shape), or in a system message after the line ``JSON Schema of the answer:`` (how batchrun
tells a gateway without response_format; written out here so the emulator stays an
independent oracle).
"""

from __future__ import annotations

import random
from typing import Any

import orjson

SCHEMA_HEADING = "JSON Schema of the answer:"
BAD_KINDS = ("fences", "thoughts", "missing_field", "cut")


def find_schema(data: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request asks its answer to fit, if any."""
    response_format = data.get("response_format")
    if isinstance(response_format, dict):
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return spec["schema"]
    for message in data.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            continue
        content = message.get("content")
        if isinstance(content, str) and SCHEMA_HEADING in content:
            text = content.split(SCHEMA_HEADING, 1)[1].strip()
            try:
                schema = orjson.loads(text)
            except orjson.JSONDecodeError:
                return None
            return schema if isinstance(schema, dict) else None
    return None


def json_answer(schema: dict[str, Any], number: int, bad_rate: float) -> str:
    """The answer's text: a fitting value, or (for a share ``bad_rate`` of numbers) a bad one."""
    rng = random.Random(number)
    value = _value(schema, rng, depth=0)
    if rng.random() >= bad_rate:
        return orjson.dumps(value).decode()
    kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    if kind == "fences":
        return f"```json\n{text}\n```"
    if kind == "thoughts":
        return (f"<thought>The schema asks for {len(schema.get('properties') or {})} fields; "
                f"I fill them from the document.</thought>Here is the JSON:\n{text}")
    if kind == "missing_field" and isinstance(value, dict) and schema.get("required"):
        value.pop(schema["required"][rng.randrange(len(schema["required"]))], None)
        return orjson.dumps(value).decode()
    return text[: max(1, len(text) // 2)]  # cut short mid-value: not JSON


def _value(schema: Any, rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: _value(sub, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        if depth > 4:
            return []
        low = int(schema.get("minItems", 1))
        return [_value(schema.get("items") or {}, rng, depth + 1)
                for _ in range(max(low, 1 + rng.randrange(3)))]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return low + rng.randrange(int(schema.get("maximum", low + 1000)) - low + 1)
    if kind == "number":
        bottom = float(schema.get("minimum", 0.0))
        top = float(schema.get("maximum", bottom + 1000.0))
        return round(bottom + rng.random() * (top - bottom), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if schema.get("format") == "date":
        return f"20{rng.randrange(10, 30)}-{1 + rng.randrange(12):02d}-{1 + rng.randrange(28):02d}"
    return f"value {rng.randrange(10_000)}"
